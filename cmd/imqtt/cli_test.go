package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/broker/brokertest"
)

func TestMain(m *testing.M) {
	// bcrypt at cost 10 takes over a second per hash under the race
	// detector.
	auth.SetTestCost()
	os.Exit(m.Run())
}

// configFixtures are the configuration files the broker package tests too.
const configFixtures = "../../testdata/config"

type result struct {
	code           int
	stdout, stderr string
}

// cli runs the CLI in-process with args.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb, nil)
	return result{code, out.String(), errb.String()}
}

// want fails the test unless r exited with code and its stderr holds every
// fragment.
func (r result) want(t *testing.T, code int, stderr ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("stderr %q does not contain %q", r.stderr, s)
		}
	}
}

// listed parses `user list` output into user -> role, checking the header.
func listed(t *testing.T, dir string) map[string]string {
	t.Helper()
	r := cli(t, "user", "list", "--data", dir)
	r.want(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if f := strings.Fields(lines[0]); len(f) != 3 || f[0] != "USER" || f[1] != "ROLE" || f[2] != "CREATED" {
		t.Fatalf("list header %q", lines[0])
	}
	users := map[string]string{}
	var order []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("list line %q", l)
		}
		users[f[0]] = f[1]
		order = append(order, f[0])
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Fatalf("list not in id order: %v", order)
		}
	}
	return users
}

// login starts a broker on dir and reports whether user can connect with
// password; the broker is closed again, releasing the store.
func login(t *testing.T, dir, user, password string) error {
	t.Helper()
	b := brokertest.StartIn(t, dir, nil)
	defer b.Close()
	c, err := b.Dial(brokertest.Opts{V5: true, ClientID: "cli-check", User: user, Password: password})
	if err == nil {
		c.Close()
	}
	return err
}

func TestUserLifecycle(t *testing.T) {
	dir := t.TempDir()
	r := cli(t, "user", "add", "alice", "--password", "first-pw", "--data", dir)
	r.want(t, exitOK)
	if !strings.Contains(r.stdout, "user alice added") {
		t.Fatalf("add output %q", r.stdout)
	}
	// Flags may come before the name too.
	cli(t, "user", "add", "--data", dir, "--role", "operator", "--password", "op-pw", "bob").want(t, exitOK)
	cli(t, "user", "add", "alice", "--password", "other", "--data", dir).want(t, exitError, "already exists")

	if got := listed(t, dir); len(got) != 2 || got["alice"] != "user" || got["bob"] != "operator" {
		t.Fatalf("list: %v", got)
	}
	if err := login(t, dir, "alice", "first-pw"); err != nil {
		t.Fatalf("alice with her password: %v", err)
	}

	cli(t, "user", "passwd", "alice", "--password", "second-pw", "--data", dir).want(t, exitOK)
	if err := login(t, dir, "alice", "second-pw"); err != nil {
		t.Fatalf("alice with the new password: %v", err)
	}
	if err := login(t, dir, "alice", "first-pw"); err == nil {
		t.Fatal("alice's old password still works")
	}

	r = cli(t, "user", "token", "alice", "--name", "phone", "--data", dir)
	r.want(t, exitOK, "token")
	token := strings.TrimSpace(r.stdout)
	if strings.Contains(token, "\n") || len(token) != auth.TokenLen {
		t.Fatalf("token output %q: want one token of %d characters", r.stdout, auth.TokenLen)
	}
	if err := login(t, dir, "alice", token); err != nil {
		t.Fatalf("alice with her token: %v", err)
	}
	if err := login(t, dir, "bob", token); err == nil {
		t.Fatal("alice's token works for bob")
	}

	cli(t, "user", "remove", "alice", "--data", dir).want(t, exitOK)
	if got := listed(t, dir); len(got) != 1 || got["bob"] != "operator" {
		t.Fatalf("list after remove: %v", got)
	}
	if err := login(t, dir, "alice", token); err == nil {
		t.Fatal("a removed user's token still works")
	}
	cli(t, "user", "remove", "alice", "--data", dir).want(t, exitError, "no such user alice")
	cli(t, "user", "passwd", "alice", "--password", "x", "--data", dir).want(t, exitError, "no such user alice")
	cli(t, "user", "token", "alice", "--data", dir).want(t, exitError)
}

func TestUserListEmpty(t *testing.T) {
	if got := listed(t, t.TempDir()); len(got) != 0 {
		t.Fatalf("list of a new store: %v", got)
	}
}

func TestUserBadInput(t *testing.T) {
	dir := t.TempDir()
	cli(t, "user", "add", "carol", "--password", "pw", "--data", dir).want(t, exitOK)
	for _, id := range []string{"Bob", "a+b", "a#", "a/b", "_lead", ".dot", "", "é", strings.Repeat("x", 33)} {
		for _, sub := range [][]string{{"add", "--password", "pw"}, {"passwd", "--password", "pw"}, {"remove"}, {"token"}} {
			t.Run(fmt.Sprintf("%s %q", sub[0], id), func(t *testing.T) {
				args := append([]string{"user", sub[0], id, "--data", dir}, sub[1:]...)
				cli(t, args...).want(t, exitUsage, imqtt.IDRule)
			})
		}
	}
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"add without password", []string{"user", "add", "dave"}, "--password"},
		{"add with empty password", []string{"user", "add", "dave", "--password", ""}, "--password"},
		{"add with overlong password", []string{"user", "add", "dave", "--password", strings.Repeat("p", 73)}, "72"},
		{"bad role", []string{"user", "add", "dave", "--password", "pw", "--role", "admin"}, "role"},
		{"two names", []string{"user", "add", "dave", "erin", "--password", "pw"}, "exactly one"},
		{"no name", []string{"user", "remove"}, "exactly one"},
		{"list with a name", []string{"user", "list", "carol"}, "unexpected"},
		{"unknown flag", []string{"user", "add", "dave", "--password", "pw", "--colour", "red"}, "colour"},
		{"unknown subcommand", []string{"user", "rename", "carol"}, "rename"},
		{"no subcommand", []string{"user"}, "subcommand"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cli(t, append(tc.args, "--data", dir)...).want(t, exitUsage, tc.stderr)
		})
	}
	// Nothing above touched the store.
	if got := listed(t, dir); len(got) != 1 || got["carol"] != "user" {
		t.Fatalf("list: %v", got)
	}
}

func TestUnknownCommandAndFlag(t *testing.T) {
	unused := t.TempDir()
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no command", nil, "Usage"},
		{"unknown command", []string{"frobnicate"}, "frobnicate"},
		{"unknown serve flag", []string{"serve", "--colour", "red"}, "colour"},
		{"serve argument", []string{"serve", "now"}, "now"},
		{"bad listen flag", []string{"serve", "--mqtt", "nonsense", "--data", unused}, "listen.mqtt"},
		{"bad log level flag", []string{"serve", "--log-level", "loud", "--data", unused}, "log.level"},
		{"missing config file", []string{"serve", "--config", "no-such-file.yaml"}, "no-such-file.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cli(t, tc.args...).want(t, exitUsage, tc.stderr)
		})
	}
	if r := cli(t, "help"); r.code != exitOK || !strings.Contains(r.stdout, "imqtt serve") {
		t.Fatalf("help: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestServeBadConfig(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(configFixtures, "bad_*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no bad config fixtures in %s: %v", configFixtures, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			key := strings.TrimPrefix(first, "# want: ")
			dir := t.TempDir()
			cli(t, "serve", "--config", p, "--data", dir).want(t, exitUsage, key)
			// A refused configuration creates no store.
			if _, err := os.Stat(filepath.Join(dir, "imqtt.db")); err == nil {
				t.Fatal("store created despite the bad configuration")
			}
		})
	}
}

func TestUserCommandsAgainstRunningBroker(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice")
	// Each attempt waits out the store's lock timeout, so only two: one
	// that writes and one that only reads (every command opens the store
	// the same way).
	for _, args := range [][]string{
		{"user", "add", "carol", "--password", "pw"},
		{"user", "list"},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			cli(t, append(args, "--data", b.Dir)...).want(t, exitError, "held by a running broker", "HTTP")
		})
	}
	// The broker and its users are untouched.
	if _, err := b.Dial(brokertest.Opts{User: "alice", Password: "pw-alice", ClientID: "still"}); err != nil {
		t.Fatalf("alice after the refused commands: %v", err)
	}
}

// syncBuffer is stderr shared by the serving goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLine returns the first JSON log line with message msg, if any.
func logLine(logs, msg string) map[string]any {
	for _, l := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == msg {
			return m
		}
	}
	return nil
}

func TestServeFlagsOverrideFileAndSignalStops(t *testing.T) {
	fileData, flagData := t.TempDir(), t.TempDir()
	cfg := filepath.Join(t.TempDir(), "imqtt.yaml")
	// The file turns every listener on and logs only errors; the flags
	// move the store, turn WebSocket off and log at info, which is what
	// makes the "imqtt serving" line appear at all.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`data: %q
listen: {mqtt: "127.0.0.1:0", ws: "127.0.0.1:0", http: "127.0.0.1:0"}
log: {level: error, format: json}
`, fileData)), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "user", "add", "alice", "--password", "pw-alice", "--data", flagData).want(t, exitOK)

	stderr := &syncBuffer{}
	sig := make(chan os.Signal, 1)
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"serve", "--config", cfg, "--data", flagData, "--ws", "off", "--log-level", "info"}, io.Discard, stderr, sig)
	}()
	var serving map[string]any
	brokertest.Eventually(t, "the imqtt serving log line", func() bool {
		select {
		case code := <-exit:
			t.Fatalf("serve exited with %d: %s", code, stderr.String())
		default:
		}
		serving = logLine(stderr.String(), "imqtt serving")
		return serving != nil
	})
	mqttAddr, _ := serving["mqtt"].(string)
	httpAddr, _ := serving["http"].(string)
	if mqttAddr == "" || httpAddr == "" || serving["ws"] != "" {
		t.Fatalf("listeners mqtt %q ws %q http %q; want ws off by flag, the others from the file", mqttAddr, serving["ws"], httpAddr)
	}
	if store, _ := serving["store"].(string); !strings.HasPrefix(store, flagData) {
		t.Fatalf("store %q, want it in the --data directory %s", store, flagData)
	}
	if _, err := os.Stat(filepath.Join(fileData, "imqtt.db")); err == nil {
		t.Fatal("a store was created in the file's data directory despite --data")
	}

	c, err := brokertest.Dial(mqttAddr, brokertest.Opts{V5: true, ClientID: "served", User: "alice", Password: "pw-alice"})
	if err != nil {
		t.Fatalf("connect to the served broker: %v", err)
	}
	defer c.Close()
	res, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %s", res.Status)
	}

	sig <- syscall.SIGTERM
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("serve exited with %d after SIGTERM: %s", code, stderr.String())
		}
	case <-timeoutC():
		t.Fatal("serve still running after SIGTERM")
	}
	select {
	case <-c.Gone():
	case <-timeoutC():
		t.Fatal("the client is still connected after shutdown")
	}
	// The store was closed: offline commands work on it again.
	if got := listed(t, flagData); got["alice"] != "user" {
		t.Fatalf("list after shutdown: %v", got)
	}
}

func timeoutC() <-chan time.Time { return time.After(brokertest.Timeout) }

// A TLS certificate or key that cannot be loaded is a configuration error:
// exit 2 naming the keys, before any store is created.
func TestServeBadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, cert, key string }{
		{"missing files", filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key")},
		{"not PEM", junk, junk},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "imqtt.yaml")
			yaml := fmt.Sprintf("tls: {cert: %q, key: %q}\n", tc.cert, tc.key)
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			data := t.TempDir()
			cli(t, "serve", "--config", cfg, "--data", data, "--mqtt", "127.0.0.1:0", "--ws", "off", "--http", "off").want(t, exitUsage, "tls.cert")
			if _, err := os.Stat(filepath.Join(data, "imqtt.db")); err == nil {
				t.Fatal("store created despite the bad TLS files")
			}
		})
	}
}
