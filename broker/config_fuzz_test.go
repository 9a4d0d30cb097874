package broker_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imqtt/imqtt/broker"
)

// FuzzParseConfig feeds arbitrary bytes to the configuration parser: it
// never panics, it either refuses with an error that says something or
// returns a configuration that validates, and an accepted conformance mode
// is on loopback only.
func FuzzParseConfig(f *testing.F) {
	// The fixtures and the commented example, good and bad.
	for _, pattern := range []string{"../testdata/config/*.yaml", "../testdata/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"{}",
		"conformance: true\nlisten: {mqtt: \"127.0.0.1:1883\", ws: off, http: \"[::1]:8080\"}\n",
		"limits: {messages_per_second: 0.5, requests_per_second: 1e3, connections_per_user: 1, subscriptions_per_client: 0x10}\n",
		"backlog: {max_entries: 1, max_age: 1m30s}\nconnect_timeout: 100ms\nmax_keepalive: 65535\n",
		"open_topics: [\"telemetry/#\", \"a/+/c\"]\ndeny_topics: [\"#\"]\n",
		"max_payload: 1.5\n",
		"data: &a ./x\nlog: *a\n",
		"tls: {cert: c.pem}\n",
		"listen: [1, 2]\n",
		"? [a]\n: b\n",
		"max_clients: 9223372036854775808\n",
		"log: {level: trace, format: console}\nmax_group_members: 100000\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := broker.ParseConfig(b)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("refused with an empty error message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a configuration that does not validate: %v", err)
		}
		if c.Conformance {
			for _, a := range []string{c.Listen.MQTT, c.Listen.WS, c.Listen.HTTP} {
				if !broker.Disabled(a) && !hdLoopback(a) {
					t.Fatalf("conformance accepted with a listener on %q", a)
				}
			}
		}
	})
}

// hdLoopback says whether a listener address is on loopback, by another
// parser than the broker's (net/netip): the name localhost, or an IP in
// 127.0.0.0/8 or ::1, IPv4-mapped or not.
func hdLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// A rate must be a positive number; NaN is none, and a bucket refilled at
// NaN tokens a second never runs dry.
func TestParseConfigRateNotANumber(t *testing.T) {
	for _, y := range []string{
		"limits: {messages_per_second: .nan}\n",
		"limits: {requests_per_second: .NaN}\n",
	} {
		if c, err := broker.ParseConfig([]byte(y)); err == nil {
			t.Errorf("%q accepted: %+v", y, c.Limits)
		}
	}
}
