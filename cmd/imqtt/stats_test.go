package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// runStats runs `imqtt stats` in-process.
func runStats(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(append([]string{"stats"}, args...), &out, &errb, nil)
	return code, out.String(), errb.String()
}

// statsTable parses the table: figure -> value, checking the header and
// that every value starts in the same column.
func statsTable(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "FIGURE") {
		t.Fatalf("no table:\n%s", out)
	}
	col := strings.Index(lines[0], "VALUE")
	rows := map[string]string{}
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Fatalf("line %q is not aligned on column %d:\n%s", l, col, out)
		}
		k := strings.TrimSpace(l[:col])
		if _, dup := rows[k]; dup || k == "" {
			t.Fatalf("figure %q twice or empty:\n%s", k, out)
		}
		rows[k] = strings.TrimSpace(l[col:])
	}
	return rows
}

func TestStatsCommand(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice", "bob")
	a := b.Connect(t, "alice", true)
	if r, err := a.Publish("im/req", 1, []byte(`{"rid":"1","op":"x.nope"}`)); err != nil || r != 0 {
		t.Fatalf("request: %v %x", err, r)
	}
	_, port, _ := net.SplitHostPort(b.Addr("http"))
	for _, addr := range []string{b.Addr("http"), ":" + port, "http://" + b.Addr("http") + "/"} {
		t.Run(addr, func(t *testing.T) {
			var rows map[string]string
			brokertest.Eventually(t, "the request to be counted", func() bool {
				code, out, errs := runStats("--http", addr)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errs)
				}
				rows = statsTable(t, out)
				return rows["requests_by_op.(unknown)"] == "1"
			})
			want := map[string]string{
				"users":                                "2",
				"users_online":                         "1",
				"devices_online":                       "1",
				"messages":                             "0",
				"backlog":                              "0",
				"requests_refused_by_code.bad_request": "1",
				"messages_refused_by_code":             "none",
				"broker.clients_connected":             "1",
			}
			for k, v := range want {
				if rows[k] != v {
					t.Errorf("%s = %q, want %q", k, rows[k], v)
				}
			}
			for _, k := range []string{"conversations", "groups", "store_bytes", "commits",
				"commit_latency_seconds.p99", "broker.uptime", "broker.bytes_received"} {
				if _, ok := rows[k]; !ok {
					t.Errorf("no %s in the table", k)
				}
			}
			if _, ok := rows["requests_by_op.history"]; ok {
				t.Error("a zero count by op is shown")
			}
			if !strings.HasSuffix(rows["store_bytes"], "KiB)") {
				t.Errorf("store_bytes = %q, want a readable size too", rows["store_bytes"])
			}
			if !strings.Contains(rows["broker.started"], "T") {
				t.Errorf("broker.started = %q, want a readable time too", rows["broker.started"])
			}
		})
	}
}

// TestStatsCommandOpenListener runs `imqtt stats` without credentials
// against brokers whose HTTP listener listens on every address, as the
// default `imqtt serve` (":8080") does: /stats needs none there either.
func TestStatsCommandOpenListener(t *testing.T) {
	for _, bind := range []string{":0", "0.0.0.0:0"} {
		t.Run(bind, func(t *testing.T) {
			b := brokertest.Start(t, func(c *broker.Config) { c.Listen.HTTP = bind })
			b.Users("alice", "bob", "carol")
			_, port, err := net.SplitHostPort(b.Addr("http"))
			if err != nil {
				t.Fatalf("http address %q: %v", b.Addr("http"), err)
			}
			for _, addr := range []string{":" + port, "127.0.0.1:" + port, "http://127.0.0.1:" + port} {
				code, out, errs := runStats("--http", addr)
				if code != exitOK || errs != "" {
					t.Fatalf("--http %s: exit %d, stderr %q, want 0 and nothing", addr, code, errs)
				}
				if rows := statsTable(t, out); rows["users"] != "3" {
					t.Errorf("--http %s: users = %q, want 3", addr, rows["users"])
				}
			}
		})
	}
}

func TestStatsUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, out, errs := runStats("--http", addr)
	if code != exitError || out != "" {
		t.Fatalf("exit %d, stdout %q, want 1 and nothing", code, out)
	}
	if !strings.Contains(errs, "cannot reach the broker at http://"+addr+"/stats") || !strings.Contains(errs, "--http") {
		t.Fatalf("stderr %q does not say what failed and what to check", errs)
	}
}

func TestStatsAnswers(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     string
		handler http.HandlerFunc
		code    int
		stderr  []string
		stdout  []string
	}{
		{
			name: "credentials wanted",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":"authentication required"}`, http.StatusUnauthorized)
			},
			code:   exitError,
			stderr: []string{"401", "authentication required", "imqtt serves /stats without credentials", "--user and --password"},
		},
		{
			name: "credentials sent",
			args: []string{"--user", "root", "--password", "s3cret"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				if u, p, ok := r.BasicAuth(); !ok || u != "root" || p != "s3cret" || r.URL.Path != "/stats" {
					http.Error(w, `{"error":"no"}`, http.StatusForbidden)
					return
				}
				w.Write([]byte(`{"users": 7, "refusals_by_code": {"": 0, "bad_request": 2}, "broker": {"version": "x"}}`))
			},
			code:   exitOK,
			stdout: []string{"users", "7", "refusals_by_code.bad_request", "broker.version"},
		},
		{
			name: "password from the environment",
			args: []string{"--user", "root"},
			env:  "from-env",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if _, p, _ := r.BasicAuth(); p != "from-env" {
					http.Error(w, `{"error":"not an operator"}`, http.StatusForbidden)
					return
				}
				w.Write([]byte(`{"users": 1}`))
			},
			code:   exitOK,
			stdout: []string{"users"},
		},
		{
			name: "not imqtt",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("<html>hello</html>"))
			},
			code:   exitError,
			stderr: []string{"did not answer with the figures"},
		},
		{
			name: "store down",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":"store unavailable"}`, http.StatusServiceUnavailable)
			},
			code:   exitError,
			stderr: []string{"503", "store unavailable"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			t.Setenv("IMQTT_PASSWORD", tt.env)
			code, out, errs := runStats(append([]string{"--http", srv.URL}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errs)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr %q lacks %q", errs, s)
				}
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout %q lacks %q", out, s)
				}
			}
			if strings.Contains(out+errs, "s3cret") || tt.env != "" && strings.Contains(out+errs, tt.env) {
				t.Error("the password was printed")
			}
		})
	}
}

func TestStatsBadFlags(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"argument", []string{"extra"}, `unexpected argument "extra"`},
		{"no port", []string{"--http", "localhost"}, "want host:port"},
		{"other scheme", []string{"--http", "ftp://host:21"}, "want host:port or an http:// URL"},
		{"empty", []string{"--http", ""}, "empty address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := runStats(tt.args...)
			if code != exitUsage || !strings.Contains(errs, tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errs, tt.stderr)
			}
		})
	}
}
