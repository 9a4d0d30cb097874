package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one run: printed as one JSON line, then as a summary.
type Result struct {
	Mode  string `json:"mode"`
	Label string `json:"label,omitempty"`
	Addr  string `json:"addr"`
	Run   string `json:"run"`
	Start string `json:"start"`

	// Parameters.
	Pairs   int     `json:"pairs,omitempty"`
	QoS     *int    `json:"qos,omitempty"`
	Size    int     `json:"size,omitempty"`
	Rate    float64 `json:"rate,omitempty"`
	Conns   int     `json:"conns,omitempty"`
	Members int     `json:"members,omitempty"`
	Tokens  bool    `json:"tokens,omitempty"`
	// Anonymous: connected without credentials.
	Anonymous bool `json:"anonymous,omitempty"`
	Inflight  int  `json:"inflight,omitempty"`

	// Seconds is the measured window: first send to last delivery (pairs,
	// raw, fanout), reconnect to last message (drain), first connect to
	// last SUBACK (storm, idle).
	Seconds float64 `json:"seconds"`

	Sent       int64 `json:"sent,omitempty"`
	Acked      int64 `json:"acked,omitempty"`
	Received   int64 `json:"received,omitempty"` // deliveries, duplicates included
	Unique     int64 `json:"unique,omitempty"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	// Stale counts deliveries of other runs' messages (a backlog left over).
	Stale     int64            `json:"stale,omitempty"`
	Refused   int64            `json:"refused,omitempty"`
	Codes     map[string]int64 `json:"refused_codes,omitempty"`
	PubErrors int64            `json:"publish_errors,omitempty"`
	ConnLost  int64            `json:"connections_lost,omitempty"`

	// MsgsPerSec is the headline rate: unique deliveries per second of the
	// window.
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"`
	// SendPerSec is acknowledged publishes per second of sending.
	SendPerSec float64  `json:"send_per_sec,omitempty"`
	Latency    *Latency `json:"latency,omitempty"`

	// fanout: time from send until the last member has the message.
	LastMember *Latency `json:"last_member,omitempty"`
	// drain: time from CONNECT until the first backlog message.
	FirstMs float64 `json:"first_ms,omitempty"`
	// idle, storm.
	ConnectFailures int      `json:"connect_failures,omitempty"`
	Connect         *Latency `json:"connect,omitempty"`
	KiBPerConn      float64  `json:"kib_per_conn,omitempty"`

	Soak   *Soak    `json:"soak,omitempty"`
	Broker *Proc    `json:"broker,omitempty"`
	Client *Proc    `json:"client,omitempty"`
	Notes  []string `json:"notes,omitempty"`
}

func newResult(o *options) *Result {
	return &Result{Mode: o.mode, Label: o.label, Addr: o.addr, Run: o.runID, Start: time.Now().UTC().Format(time.RFC3339), Anonymous: o.anonymous}
}

func (r *Result) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

func (r *Result) print(w io.Writer, quiet bool) {
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n", b)
	if quiet {
		return
	}
	fmt.Fprintf(w, "%s\n", r.summary())
}

// headline is the one-line gist of a result.
func (r *Result) headline() string {
	switch r.Mode {
	case "idle":
		return fmt.Sprintf("%d idle connections: %.1f KiB of broker RSS each", r.Conns, r.KiBPerConn)
	case "storm":
		auth := "passwords"
		switch {
		case r.Tokens:
			auth = "tokens"
		case r.Anonymous:
			auth = "anonymous"
		}
		return fmt.Sprintf("%d devices (%s) authenticated and subscribed in %.2f s (%d failed)", r.Conns, auth, r.Seconds, r.ConnectFailures)
	case "drain":
		return fmt.Sprintf("drained %d of %d messages in %.3f s: %.0f msg/s", r.Unique, r.Acked, r.Seconds, r.MsgsPerSec)
	case "fanout":
		s := fmt.Sprintf("group of %d: %d messages", r.Members, r.Sent)
		if r.LastMember != nil {
			s += fmt.Sprintf(", last member has it p50 %.2f ms p99 %.2f ms max %.2f ms", r.LastMember.P50, r.LastMember.P99, r.LastMember.Max)
		}
		return s
	}
	return fmt.Sprintf("%.0f msg/s delivered (%d unique of %d acked, lost %d, duplicates %d)", r.MsgsPerSec, r.Unique, r.Acked, r.Lost, r.Duplicates)
}

func (r *Result) summary() string {
	var b strings.Builder
	name := r.Mode
	if r.Label != "" {
		name += " [" + r.Label + "]"
	}
	fmt.Fprintf(&b, "%s against %s: %s\n", name, r.Addr, r.headline())
	if r.Sent > 0 {
		fmt.Fprintf(&b, "  sent %d, acked %d (%.0f/s), deliveries %d, unique %d, lost %d, duplicates %d", r.Sent, r.Acked, r.SendPerSec, r.Received, r.Unique, r.Lost, r.Duplicates)
		if r.Refused > 0 {
			fmt.Fprintf(&b, ", refused %d %v", r.Refused, r.Codes)
		}
		if r.Stale > 0 {
			fmt.Fprintf(&b, ", stale %d", r.Stale)
		}
		if r.PubErrors > 0 {
			fmt.Fprintf(&b, ", publish errors %d", r.PubErrors)
		}
		b.WriteString("\n")
	}
	if l := r.Latency; l != nil && l.N > 0 {
		fmt.Fprintf(&b, "  latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  (n=%d)\n", l.P50, l.P90, l.P99, l.Max, l.N)
	}
	if l := r.Connect; l != nil && l.N > 0 {
		fmt.Fprintf(&b, "  connect+subscribe ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", l.P50, l.P90, l.P99, l.Max)
	}
	if r.ConnLost > 0 {
		fmt.Fprintf(&b, "  connections lost: %d\n", r.ConnLost)
	}
	for _, p := range []struct {
		who string
		p   *Proc
	}{{"broker", r.Broker}, {"bench client", r.Client}} {
		if p.p != nil {
			fmt.Fprintf(&b, "  %s pid %d: CPU %.1f%% (%.2f s), RSS start %s, peak %s, end %s, VmHWM %s\n", p.who, p.p.PID, p.p.CPUPercent, p.p.CPUSeconds,
				mib(p.p.RSSStartKiB), mib(p.p.RSSPeakKiB), mib(p.p.RSSEndKiB), mib(p.p.VmHWMKiB))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return strings.TrimRight(b.String(), "\n")
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// table prints the results in files (JSON lines; other lines are skipped) as
// a ratio table: throughput runs against the base row, then one line for
// every other run.
func table(files []string, base string, w io.Writer) error {
	if len(files) == 0 {
		return errors.New("table: name at least one file of result lines (- for stdin)")
	}
	var rs []*Result
	for _, f := range files {
		var in io.Reader = os.Stdin
		if f != "-" {
			fh, err := os.Open(f)
			if err != nil {
				return err
			}
			defer fh.Close()
			in = fh
		}
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var r Result
			if json.Unmarshal([]byte(line), &r) == nil && r.Mode != "" {
				rs = append(rs, &r)
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
	}
	var thr, other []*Result
	for _, r := range rs {
		if r.Mode == "pairs" || r.Mode == "raw" {
			thr = append(thr, r)
		} else {
			other = append(other, r)
		}
	}
	if len(thr) > 0 {
		ref := thr[0]
		for _, r := range thr {
			if base != "" && r.Label == base {
				ref = r
			}
		}
		// A paced run is compared with the first run at the same pace:
		// its msg/s is the pace, not a capacity.
		refFor := func(r *Result) *Result {
			if r.Rate == ref.Rate {
				return ref
			}
			for _, c := range thr {
				if c.Rate == r.Rate {
					return c
				}
			}
			return r
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "run\tmode\tqos\trate\tmsg/s\tratio\tlost\tdup\tp50 ms\tp99 ms\tmax ms\tbroker CPU%\tbroker peak RSS\t")
		for _, r := range thr {
			ratio := "-"
			if rr := refFor(r); rr.MsgsPerSec > 0 {
				ratio = fmt.Sprintf("%.2fx", r.MsgsPerSec/rr.MsgsPerSec)
			}
			qos, rate := "-", "unpaced"
			if r.QoS != nil {
				qos = fmt.Sprint(*r.QoS)
			}
			if r.Rate > 0 {
				rate = fmt.Sprintf("%.0f/s", r.Rate)
			}
			var p50, p99, mx string = "-", "-", "-"
			if l := r.Latency; l != nil && l.N > 0 {
				p50, p99, mx = fmt.Sprintf("%.2f", l.P50), fmt.Sprintf("%.2f", l.P99), fmt.Sprintf("%.2f", l.Max)
			}
			cpu, rss := "-", "-"
			if r.Broker != nil {
				cpu, rss = fmt.Sprintf("%.0f", r.Broker.CPUPercent), mib(r.Broker.RSSPeakKiB)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", name(r), r.Mode, qos, rate, r.MsgsPerSec, ratio, r.Lost, r.Duplicates, p50, p99, mx, cpu, rss)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "(ratio: msg/s over %s; paced runs over the first run at the same pace)\n", name(ref))
	}
	for _, r := range other {
		fmt.Fprintf(w, "%s: %s\n", name(r), r.headline())
	}
	return nil
}

func name(r *Result) string {
	if r.Label != "" {
		return r.Label
	}
	return r.Mode + "@" + r.Addr
}
