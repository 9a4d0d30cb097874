package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// statsTimeout bounds the whole /stats request: the broker answers in
// milliseconds, so anything slower is a broker in trouble.
const statsTimeout = 10 * time.Second

// stats prints a running broker's GET /stats as a table.
func stats(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("imqtt stats", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, "Usage: imqtt stats [--http ADDR] [--user USER --password P]\n\n"+
			"Prints a running broker's figures (GET /stats, which needs no credentials). --user and\n"+
			"--password are sent as HTTP basic auth, for a proxy in front of the broker that wants\n"+
			"them (the password may also come from $IMQTT_PASSWORD).\n\n")
		flags.PrintDefaults()
	}
	addr := flags.String("http", "127.0.0.1:8080", "the broker's HTTP `address` (host:port or URL)")
	user := flags.String("user", "", "a user `name` for HTTP basic auth, for a proxy that wants it")
	password := flags.String("password", "", "the basic auth `password` (default $IMQTT_PASSWORD)")
	pos, err := parseInterspersed(flags, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "imqtt stats: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	if *password == "" {
		*password = os.Getenv("IMQTT_PASSWORD")
	}
	u, err := statsURL(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "imqtt stats: --http %q: %v\n", *addr, err)
		return exitUsage
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintf(stderr, "imqtt stats: --http %q: %v\n", *addr, err)
		return exitUsage
	}
	if *user != "" {
		req.SetBasicAuth(*user, *password)
	}
	client := &http.Client{Timeout: statsTimeout}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "imqtt stats: cannot reach the broker at %s: %v\n"+
			"(is it running, and is --http its HTTP listener address?)\n", u, unwrapURLError(err))
		return exitError
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		fmt.Fprintf(stderr, "imqtt stats: reading the answer from %s: %v\n", u, err)
		return exitError
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		fmt.Fprintf(stderr, "imqtt stats: %s answered %s: %s\n", u, resp.Status, msg)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			// imqtt itself never asks: this is a proxy in front of it.
			fmt.Fprint(stderr, "(imqtt serves /stats without credentials; whatever answered at --http wants them: give --user and --password)\n")
		}
		return exitError
	}
	rows, err := flattenJSON(body)
	if err != nil {
		fmt.Fprintf(stderr, "imqtt stats: %s did not answer with the figures (is --http an imqtt broker?): %v\n", u, err)
		return exitError
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r.key, readable(r.key, r.value))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(stderr, "imqtt stats: %v\n", err)
		return exitError
	}
	return exitOK
}

// statsURL turns --http into the /stats URL: "host:port", ":port"
// (this host) or an http(s) URL.
func statsURL(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("empty address")
	}
	if !strings.Contains(addr, "://") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return "", fmt.Errorf("want host:port or a URL: %w", err)
		}
		if host == "" {
			// The serve flag's ":8080" listens everywhere, here included.
			host = "127.0.0.1"
		}
		addr = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", errors.New("want host:port or an http:// URL")
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/stats"
	return u.String(), nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

type statRow struct{ key, value string }

// flattenJSON lists a JSON object's scalar values in the order the broker
// wrote them, nested objects' keys joined with dots ("broker.uptime").
// Counters by label ("..._by_code" and the like) leave out their zeros,
// which are most of them; one with none at all says so.
func flattenJSON(body []byte) ([]statRow, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		if err == nil {
			err = errors.New("not a JSON object")
		}
		return nil, err
	}
	var rows []statRow
	if err := flattenObject(dec, "", &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// flattenObject reads an object's members up to and including its closing
// brace.
func flattenObject(dec *json.Decoder, prefix string, rows *[]statRow) error {
	byLabel := strings.Contains(prefix, "_by_")
	start := len(*rows)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string)
		if k == "" {
			k = "(unknown)"
		}
		key := prefix + k
		t, err = dec.Token()
		if err != nil {
			return err
		}
		switch v := t.(type) {
		case json.Delim:
			if v != '{' {
				return fmt.Errorf("%s: arrays are not figures", key)
			}
			if err := flattenObject(dec, key+".", rows); err != nil {
				return err
			}
		case json.Number:
			if byLabel && v.String() == "0" {
				continue
			}
			*rows = append(*rows, statRow{key, v.String()})
		case string:
			*rows = append(*rows, statRow{key, v})
		case bool:
			*rows = append(*rows, statRow{key, strconv.FormatBool(v)})
		case nil:
			*rows = append(*rows, statRow{key, "-"})
		}
	}
	if byLabel && len(*rows) == start {
		*rows = append(*rows, statRow{strings.TrimSuffix(prefix, "."), "none"})
	}
	_, err := dec.Token() // '}'
	return err
}

// readable adds a unit a person reads faster to figures whose key names
// one: durations in seconds, sizes in bytes, times in Unix seconds.
func readable(key, v string) string {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return v
	}
	switch {
	case strings.HasSuffix(key, "_seconds") || strings.Contains(key, "_seconds.") && !strings.HasSuffix(key, ".count"):
		if f == 0 {
			return v
		}
		return fmt.Sprintf("%s (%s)", v, roundDuration(time.Duration(f*float64(time.Second))))
	case key == "broker.uptime":
		return fmt.Sprintf("%s (%s)", v, time.Duration(f)*time.Second)
	case key == "broker.started" || key == "broker.time":
		return fmt.Sprintf("%s (%s)", v, time.Unix(int64(f), 0).UTC().Format(time.RFC3339))
	case strings.HasSuffix(key, "_bytes") || strings.HasPrefix(key, "broker.bytes_") || key == "broker.memory_alloc":
		if f < 1024 {
			return v
		}
		return fmt.Sprintf("%s (%s)", v, humanBytes(f))
	}
	return v
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Microsecond)
	}
	return d
}

func humanBytes(f float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + units[i]
}
