package broker_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imqtt/imqtt/broker"
)

// cfgFixtureDir holds the configuration files tests load; the CLI tests
// use the same ones.
const cfgFixtureDir = "../testdata/config"

// cfgBadFixtures returns the bad_*.yaml fixtures with the key each one's error
// must name, from its first line "# want: KEY".
func cfgBadFixtures(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(cfgFixtureDir, "bad_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 10 {
		t.Fatalf("found %d bad config fixtures in %s, want at least 10", len(paths), cfgFixtureDir)
	}
	out := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		want, ok := strings.CutPrefix(first, "# want: ")
		if !ok || want == "" {
			t.Fatalf("%s: first line must be \"# want: KEY\"", p)
		}
		out[p] = want
	}
	return out
}

func TestConfigFixturesNameTheKey(t *testing.T) {
	for path, want := range cfgBadFixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := broker.LoadConfigFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the key %q and the file", err, want)
			}
		})
	}
}

func TestParseConfigBadValue(t *testing.T) {
	cases := []struct {
		name, yaml, key string
	}{
		{"unknown key", "colour: blue", "colour"},
		{"unknown nested key", "limits: {messages_per_sec: 5}", "messages_per_sec"},
		{"dm_policy", "dm_policy: maybe", "dm_policy"},
		{"max_payload negative", "max_payload: -1", "max_payload"},
		{"max_payload zero", "max_payload: 0", "max_payload"},
		{"max_payload too large", "max_payload: 17000000", "max_payload"},
		{"listen.mqtt", `listen: {mqtt: nonsense}`, "listen.mqtt"},
		{"listen.ws", `listen: {ws: "1882"}`, "listen.ws"},
		{"listen.http", `listen: {http: "localhost"}`, "listen.http"},
		{"tls cert only", "tls: {cert: c.pem}", "tls"},
		{"tls key only", "tls: {key: k.pem}", "tls"},
		{"conformance off loopback", "conformance: true", "conformance"},
		{"conformance with public HTTP", `{conformance: true, listen: {mqtt: "127.0.0.1:1", ws: off, http: "0.0.0.0:8080"}}`, "conformance"},
		{"log.level", "log: {level: loud}", "log.level"},
		{"log.format", "log: {format: xml}", "log.format"},
		{"backlog.max_age", "backlog: {max_age: 500ms}", "backlog.max_age"},
		{"subscribe_grace negative", "subscribe_grace: -1s", "subscribe_grace"},
		{"subscribe_grace too long", "subscribe_grace: 2m", "subscribe_grace"},
		{"backlog.max_entries", "backlog: {max_entries: 0}", "backlog.max_entries"},
		{"open_topics on im/", `open_topics: ["im/#"]`, "open_topics"},
		{"limits.messages_per_second", "limits: {messages_per_second: 0}", "limits.messages_per_second"},
		{"limits.requests_per_second", "limits: {requests_per_second: -1}", "limits.requests_per_second"},
		{"limits.connections_per_user", "limits: {connections_per_user: 0}", "limits.connections_per_user"},
		{"limits.subscriptions_per_client", "limits: {subscriptions_per_client: 0}", "limits.subscriptions_per_client"},
		{"connect_timeout", "connect_timeout: 1ms", "connect_timeout"},
		{"max_keepalive", "max_keepalive: 1", "max_keepalive"},
		{"max_clients", "max_clients: 0", "max_clients"},
		{"data empty", `data: ""`, "data"},
		{"max_group_members", "max_group_members: 1", "max_group_members"},
		{"max_payload not a number", "max_payload: abc", "max_payload"},
		{"connect_timeout not a duration", "connect_timeout: soon", "connect_timeout"},
		{"max_keepalive out of range", "max_keepalive: 70000", "max_keepalive"},
		{"fraction for a count", "limits: {connections_per_user: 1.5}", "limits.connections_per_user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := broker.ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("%s: accepted", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("%s: error %q does not name %s", tc.yaml, err, tc.key)
			}
		})
	}
}

func TestParseConfigEmptyIsDefault(t *testing.T) {
	for _, in := range []string{"", "# nothing set\n", "{}"} {
		c, err := broker.ParseConfig([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if want := broker.Default(); !reflect.DeepEqual(c, want) {
			t.Fatalf("%q:\n got  %+v\n want %+v", in, c, want)
		}
	}
}

func TestParseConfigListenerOff(t *testing.T) {
	c, err := broker.ParseConfig([]byte(`listen: {mqtt: "127.0.0.1:0", ws: off, http: ""}`))
	if err != nil {
		t.Fatal(err)
	}
	if !broker.Disabled(c.Listen.WS) || !broker.Disabled(c.Listen.HTTP) || broker.Disabled(c.Listen.MQTT) {
		t.Fatalf("listen %+v", c.Listen)
	}
}

// cfgFull is what testdata/config/full.yaml says.
func cfgFull() broker.Config {
	return broker.Config{
		Data:        "/var/lib/imqtt",
		Listen:      broker.Listen{MQTT: "127.0.0.1:2883", WS: "off", HTTP: "127.0.0.1:9080"},
		TLS:         broker.TLS{Cert: "/etc/imqtt/cert.pem", Key: "/etc/imqtt/key.pem"},
		DMPolicy:    "anyone",
		MaxPayload:  131072,
		Backlog:     broker.Backlog{MaxEntries: 500, MaxAge: 48 * time.Hour},
		OpenTopics:  []string{"telemetry/#", "status/+"},
		DenyTopics:  []string{"telemetry/secret/#"},
		Limits:      broker.Limits{MessagesPerSecond: 20, RequestsPerSecond: 10, ConnectionsPerUser: 3, SubscriptionsPerClient: 40},
		Log:         broker.Log{Level: "debug", Format: "console"},
		Conformance: true,
		// Durations and counts differ from the defaults too, so a key
		// that is not read cannot pass for one that is.
		ConnectTimeout:  5 * time.Second,
		MaxKeepalive:    120,
		MaxClients:      5000,
		MaxGroupMembers: 50,
		SubscribeGrace:  2 * time.Second,
	}
}

func TestParseConfigFullRoundTrip(t *testing.T) {
	path := filepath.Join(cfgFixtureDir, "full.yaml")
	got, err := broker.LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := cfgFull()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", path, got, want)
	}
	// Every field differs from its default, or the comparison above could
	// not tell a value read from a default kept.
	def := reflect.ValueOf(broker.Default())
	fv := reflect.ValueOf(want)
	for i := range fv.NumField() {
		f := fv.Type().Field(i)
		if f.Tag.Get("yaml") == "-" {
			continue
		}
		if reflect.DeepEqual(fv.Field(i).Interface(), def.Field(i).Interface()) {
			t.Errorf("full.yaml leaves %s at its default", f.Name)
		}
	}

	out, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	again, err := broker.ParseConfig(out)
	if err != nil {
		t.Fatalf("parsing the marshalled config: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(again, want) {
		t.Fatalf("round trip:\n got  %+v\n want %+v\n%s", again, want, out)
	}
}

// A second YAML document would otherwise be ignored without a word.
func TestParseConfigOneDocument(t *testing.T) {
	if _, err := broker.ParseConfig([]byte("dm_policy: anyone\n---\ndm_policy: friends\n")); err == nil || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Fatalf("two documents: %v", err)
	}
	if c, err := broker.ParseConfig([]byte("---\ndm_policy: anyone\n")); err != nil || c.DMPolicy != "anyone" {
		t.Fatalf("one document with a leading ---: %v %v", c.DMPolicy, err)
	}
	if _, err := broker.ParseConfig(nil); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}
