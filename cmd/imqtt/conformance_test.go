package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imqtt/imqtt/broker/brokertest"
)

// confAddr returns a loopback address whose port was free a moment ago.
func confAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serve refuses conformance mode with any listener off loopback with exit
// status 2, whether the address comes from the file, the defaults or a
// flag that overrides a loopback one from the file.
func TestServeConformanceOffLoopback(t *testing.T) {
	cases := []struct {
		name   string
		config string
		flags  []string
		key    string
	}{
		{"default listeners", "conformance: true\n", nil, "listen.mqtt"},
		{"flag overrides a loopback MQTT address", "conformance: true\nlisten: {mqtt: \"127.0.0.1:0\", ws: off, http: off}\n",
			[]string{"--mqtt", ":0"}, "listen.mqtt"},
		{"flag overrides a loopback WebSocket address", "conformance: true\nlisten: {mqtt: \"127.0.0.1:0\", ws: \"127.0.0.1:0\", http: off}\n",
			[]string{"--ws", "0.0.0.0:0"}, "listen.ws"},
		{"HTTP from the defaults", "conformance: true\nlisten: {mqtt: \"127.0.0.1:0\", ws: off}\n", nil, "listen.http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "imqtt.yaml")
			if err := os.WriteFile(cfg, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			data := filepath.Join(dir, "data")
			args := append([]string{"serve", "--config", cfg, "--data", data}, tc.flags...)
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb, nil); code != exitUsage {
				t.Fatalf("exit %d, want %d\n%s", code, exitUsage, errb.String())
			}
			if msg := errb.String(); !strings.Contains(msg, "conformance") || !strings.Contains(msg, tc.key) {
				t.Errorf("stderr %q does not name conformance and %s", msg, tc.key)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the refused serve created its data directory (stat: %v)", err)
			}
		})
	}
}

// With every listener on loopback, serve runs in conformance mode when the
// file says so: an anonymous client subscribes to #.
func TestServeConformanceOnLoopback(t *testing.T) {
	dir := t.TempDir()
	mqttAddr := confAddr(t)
	sig := make(chan os.Signal, 1)
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "--data", dir, "--mqtt", mqttAddr, "--ws", "off", "--http", "127.0.0.1:0"}, &bytes.Buffer{}, &stderr, sig)
	}()
	// Without the setting, the same command line runs the IM broker,
	// which refuses anonymous clients.
	var c *brokertest.Client
	brokertest.Eventually(t, "the IM broker listening", func() bool {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d\n%s", code, stderr.String())
		default:
		}
		c, err := brokertest.Dial(mqttAddr, brokertest.Opts{ClientID: "anon"})
		if err == nil {
			c.Close()
			t.Fatal("the IM broker accepted an anonymous client")
		}
		_, refused := err.(*brokertest.ConnectError)
		return refused
	})
	sig <- syscall.SIGTERM
	if code := <-done; code != exitOK {
		t.Fatalf("serve exit %d\n%s", code, stderr.String())
	}

	cfg := filepath.Join(dir, "conformance.yaml")
	conf := "conformance: true\nlisten: {mqtt: \"" + mqttAddr + "\", ws: off, http: \"127.0.0.1:0\"}\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- run([]string{"serve", "--config", cfg, "--data", dir}, &bytes.Buffer{}, &stderr, sig)
	}()
	brokertest.Eventually(t, "the conformance broker listening", func() bool {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d\n%s", code, stderr.String())
		default:
		}
		var err error
		c, err = brokertest.Dial(mqttAddr, brokertest.Opts{ClientID: "anon"})
		return err == nil
	})
	code, err := c.Subscribe("#", 1)
	c.Close()
	if err != nil || code != 1 {
		t.Errorf("anonymous subscribe to #: code 0x%02x, %v", code, err)
	}
	sig <- syscall.SIGTERM
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("serve exit %d\n%s", code, stderr.String())
		}
	case <-time.After(brokertest.Timeout):
		t.Fatal("serve did not stop on SIGTERM")
	}
}

// Flags override the file (PROTOCOL.md section 8), so a file that turns
// conformance on with the listeners given as loopback flags is a valid
// whole.
func TestServeConformanceLoopbackFromFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "conformance.yaml")
	if err := os.WriteFile(cfg, []byte("conformance: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	var stderr syncBuffer
	done := make(chan int, 1)
	addr := confAddr(t)
	go func() {
		done <- run([]string{"serve", "--config", cfg, "--data", dir, "--mqtt", addr, "--ws", "off", "--http", "off"},
			&bytes.Buffer{}, &stderr, sig)
	}()
	brokertest.Eventually(t, "an anonymous client connected", func() bool {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d\n%s", code, stderr.String())
		default:
		}
		c, err := brokertest.Dial(addr, brokertest.Opts{ClientID: "anon"})
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	sig <- syscall.SIGTERM
	if code := <-done; code != exitOK {
		t.Fatalf("serve exit %d\n%s", code, stderr.String())
	}
}
