package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliChildEnv makes the test binary run the CLI with the JSON-encoded
// arguments it holds and exit with its status, as the real binary does: a
// crash of the CLI (a panic, or a SIGBUS from a mapping past the end of a
// truncated file) then kills the child, not the test.
const cliChildEnv = "IMQTT_TEST_CLI_ARGS"

func init() {
	args := os.Getenv(cliChildEnv)
	if args == "" {
		return
	}
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		os.Stderr.WriteString("bad " + cliChildEnv + ": " + err.Error() + "\n")
		os.Exit(100)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(argv, os.Stdout, os.Stderr, sig))
}

// childResult is how a CLI child process ended.
type childResult struct {
	code   int
	output string
	// stopped says the child was still running at the deadline and had
	// to be stopped: a serve that started.
	stopped bool
}

// cliChild runs the CLI with args in a child process, stopping it after
// wait.
func cliChild(t *testing.T, wait time.Duration, args ...string) childResult {
	t.Helper()
	enc, _ := json.Marshal(args)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), cliChildEnv+"="+string(enc))
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := childResult{output: out.String(), stopped: ctx.Err() != nil}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.output += "\n[child killed by signal " + ws.Signal().String() + "]"
		}
	default:
		t.Fatalf("running the CLI child: %v", err)
	}
	return r
}

// dirState is a data directory's file names and contents.
func dirState(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

// A damaged store file at start gives a clear error and exit status 1:
// never a crash, never a new empty store in its place, and the file is left
// exactly as it was for the operator to restore or inspect.
func TestCorruptStoreRefused(t *testing.T) {
	// A real store to damage: the CLI's own, with a few users so that it
	// has data pages past the meta pages.
	good := t.TempDir()
	for _, u := range []string{"alice", "bob", "carol"} {
		if code := run([]string{"user", "add", u, "--password", "pw-" + u, "--data", good}, &bytes.Buffer{}, &bytes.Buffer{}, nil); code != exitOK {
			t.Fatalf("user add %s: exit %d", u, code)
		}
	}
	store, err := os.ReadFile(filepath.Join(good, "imqtt.db"))
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	if len(store) <= 2*page {
		t.Fatalf("the store is %d bytes: no data pages to cut", len(store))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	zeroedMeta := slices.Clone(store)
	clear(zeroedMeta[:2*page])
	// Intact meta pages in front of garbage: only reading the pages finds
	// the damage.
	garbageData := slices.Clone(store)
	copy(garbageData[2*page:], garbage)

	cases := []struct {
		name string
		file []byte
		bug  string
	}{
		{"empty", nil, ""},
		{"garbage", garbage, ""},
		{"text", []byte("this is not a database\n"), ""},
		{"truncated to half", store[:len(store)/2], ""},
		{"truncated to the meta pages", store[:2*page], ""},
		{"truncated to one page", store[:page], ""},
		{"truncated inside the first page", store[:100], ""},
		{"meta pages zeroed", zeroedMeta, ""},
		{"data pages garbage", garbageData, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bug != "" {
				t.Skip(tc.bug)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "imqtt.db")
			if err := os.WriteFile(path, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			before := dirState(t, dir)
			commands := [][]string{
				{"serve", "--data", dir, "--mqtt", "127.0.0.1:0", "--ws", "off", "--http", "off"},
				{"user", "list", "--data", dir},
			}
			for _, args := range commands {
				r := cliChild(t, 20*time.Second, args...)
				if r.stopped {
					t.Fatalf("imqtt %s started on a damaged store (stopped after 20 s)\n%s", args[0], r.output)
				}
				if r.code != exitError {
					t.Errorf("imqtt %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, exitError, r.output)
				}
				for _, bad := range []string{"panic", "goroutine ", "SIGBUS", "fatal error", "signal"} {
					if strings.Contains(r.output, bad) {
						t.Errorf("imqtt %s crashed (%q in its output):\n%s", args[0], bad, r.output)
					}
				}
				if !strings.Contains(r.output, "store is corrupt") || !strings.Contains(r.output, path) {
					t.Errorf("imqtt %s: the message does not say that %s is corrupt:\n%s", args[0], path, r.output)
				}
				if after := dirState(t, dir); !mapsEqualBytes(before, after) {
					t.Fatalf("imqtt %s changed the data directory: %d files before, %d after; imqtt.db %d -> %d bytes",
						args[0], len(before), len(after), len(before["imqtt.db"]), len(after["imqtt.db"]))
				}
			}
		})
	}
}

func mapsEqualBytes(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
