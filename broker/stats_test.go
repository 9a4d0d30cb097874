package broker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
)

const statsDoc = "../docs/STATS.md"

// statsHTTP GETs path on b's HTTP listener and returns status and body.
func statsHTTP(t *testing.T, b *brokertest.B, path string) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: brokertest.Timeout}
	resp, err := c.Get("http://" + b.Addr("http") + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, body
}

// statsJSON returns GET /stats decoded generically (numbers as float64),
// failing the test unless it is a 200 JSON object.
func statsJSON(t *testing.T, b *brokertest.B) map[string]any {
	t.Helper()
	status, body := statsHTTP(t, b, "/stats")
	if status != http.StatusOK {
		t.Fatalf("GET /stats: %d %s", status, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET /stats: %v\n%s", err, body)
	}
	return m
}

// statsNum returns the number at path in a /stats object: "messages", or
// "requests_by_op", "friend.list" (map keys may hold dots).
func statsNum(t *testing.T, m map[string]any, path ...string) float64 {
	t.Helper()
	var cur any = m
	for _, k := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("/stats %q: %v is no object", path, cur)
		}
		if cur, ok = obj[k]; !ok {
			t.Fatalf("/stats has no %q", path)
		}
	}
	f, ok := cur.(float64)
	if !ok {
		t.Fatalf("/stats %q = %v, not a number", path, cur)
	}
	return f
}

// docTable returns the rows of the first table after heading in STATS.md,
// cells trimmed and unquoted from backticks.
func docTable(t *testing.T, heading string) [][]string {
	t.Helper()
	f, err := os.Open(statsDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	in, table := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			if table {
				return rows
			}
			in = line == heading
		case in && strings.HasPrefix(line, "| "):
			table = true
			// No cell of these tables holds a "|".
			cells := strings.Split(strings.Trim(line, "|"), "|")
			for i, c := range cells {
				cells[i] = strings.Trim(strings.TrimSpace(c), "`")
			}
			if cells[0] == "field" || cells[0] == "family" || strings.HasPrefix(cells[0], "---") {
				continue
			}
			rows = append(rows, cells)
		case table:
			return rows
		}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no table under %q", statsDoc, heading)
	}
	return rows
}

// statsKeys lists the keys of a /stats object as STATS.md names them:
// nested objects as parent and parent.child, the maps by label (keys with
// "_by_") as the parent only.
func statsKeys(m map[string]any, prefix string, out map[string]bool) {
	for k, v := range m {
		key := prefix + k
		out[key] = true
		if sub, ok := v.(map[string]any); ok && !strings.Contains(k, "_by_") {
			statsKeys(sub, key+".", out)
		}
	}
}

func TestHealthz(t *testing.T) {
	b := brokertest.Start(t, nil)
	status, body := statsHTTP(t, b, "/healthz")
	if status != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("GET /healthz: %d %s", status, body)
	}
}

func TestStatsDocumentedFields(t *testing.T) {
	b := brokertest.Start(t, nil)
	documented := map[string]bool{}
	for _, r := range docTable(t, "## `/stats` fields") {
		documented[r[0]] = true
	}
	got := map[string]bool{}
	statsKeys(statsJSON(t, b), "", got)
	for k := range documented {
		if !got[k] {
			t.Errorf("STATS.md documents %s, /stats has no such field", k)
		}
	}
	for k := range got {
		if !documented[k] {
			t.Errorf("/stats has %s, STATS.md does not document it", k)
		}
	}
	// PROTOCOL.md section 7's minimum.
	for _, k := range []string{"users", "users_online", "devices_online", "conversations", "groups", "messages", "backlog", "store_bytes", "broker"} {
		if !got[k] {
			t.Errorf("/stats lacks %s, which PROTOCOL.md section 7 requires", k)
		}
	}
}

// statsFriends makes two users friends in the store.
func statsFriends(t *testing.T, b *brokertest.B, x, y string) {
	t.Helper()
	err := b.Store().Update(func(tx storage.Tx) error { return tx.SetFriends(x, y, time.Now().UnixMilli()) })
	if err != nil {
		t.Fatal(err)
	}
}

// statsRequest publishes a request and waits for its response.
func statsRequest(t *testing.T, c *brokertest.Client, user, body string) map[string]any {
	t.Helper()
	if _, err := c.Publish("im/req", 1, []byte(body)); err != nil {
		t.Fatalf("publish request: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(c.NextOn(t, "im/u/"+user+"/res").Payload, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// statsActivity makes alice send bob, whose only device is offline, one
// DM, a retry of it, a refused DM, a request and an unknown op, and a
// CONNECT with a wrong password; it returns alice's client.
func statsActivity(t *testing.T, b *brokertest.B) *brokertest.Client {
	t.Helper()
	b.Users("alice", "bob", "carol")
	statsFriends(t, b, "alice", "bob")
	// bob's device is bound at its first connection; gone again, what is
	// sent to bob waits for it.
	b.Connect(t, "bob", true).Close()
	brokertest.Eventually(t, "bob offline", func() bool {
		return statsNum(t, statsJSON(t, b), "devices_online") == 0
	})
	a := b.Connect(t, "alice", true)
	if code, err := a.Subscribe("im/u/alice/#", 1); err != nil || code > 1 {
		t.Fatalf("subscribe: %v %x", err, code)
	}
	if r := statsRequest(t, a, "alice", `{"rid":"1","op":"friend.list"}`); r["ok"] != true {
		t.Fatalf("friend.list: %v", r)
	}
	// An op a client makes up must not become a label value.
	if r := statsRequest(t, a, "alice", `{"rid":"2","op":"x.evil-op"}`); r["ok"] != false {
		t.Fatalf("unknown op: %v", r)
	}
	for range 2 {
		if code, err := a.Publish("im/dm/bob", 1, []byte(`{"id":"m1","body":"hi bob"}`)); err != nil || code != 0 {
			t.Fatalf("DM to bob: %v %x", err, code)
		}
	}
	if code, err := a.Publish("im/dm/carol", 1, []byte(`{"id":"m2","body":"hi carol"}`)); err != nil || code != 0x87 {
		t.Fatalf("DM to a non-friend: %v, reason %x, want 0x87", err, code)
	}
	a.NextOn(t, "im/u/alice/dm/bob") // the echo: a live delivery
	if _, err := b.Dial(brokertest.Opts{User: "alice", Password: "wrong", ClientID: "alice-x"}); err == nil {
		t.Fatal("CONNECT with a wrong password was accepted")
	}
	return a
}

func TestStatsFiguresMove(t *testing.T) {
	b := brokertest.Start(t, nil)
	before := statsJSON(t, b)
	for _, k := range []string{"users", "conversations", "messages", "backlog", "commits", "messages_accepted"} {
		if v := statsNum(t, before, k); v != 0 {
			t.Fatalf("fresh broker: %s = %v, want 0", k, v)
		}
	}
	statsActivity(t, b)

	var s map[string]any
	// The echo's acknowledgement reaches the store within 200 ms; until
	// then alice's device adds to the backlog.
	brokertest.Eventually(t, "/stats to show the DM waiting for bob's device", func() bool {
		s = statsJSON(t, b)
		return statsNum(t, s, "backlog") == 1 && statsNum(t, s, "oldest_backlog_age_seconds") > 0
	})
	want := []struct {
		path []string
		v    float64
	}{
		{[]string{"users"}, 3},
		{[]string{"users_online"}, 1},
		{[]string{"devices_online"}, 1},
		{[]string{"devices"}, 2},
		{[]string{"conversations"}, 1},
		{[]string{"groups"}, 0},
		{[]string{"messages"}, 1},
		{[]string{"backlog"}, 1},
		{[]string{"backlog_devices"}, 1},
		{[]string{"requests_by_op", "friend.list"}, 1},
		{[]string{"requests_by_op", ""}, 1},
		{[]string{"requests_by_op", "history"}, 0},
		{[]string{"requests_refused_by_code", "bad_request"}, 1},
		{[]string{"messages_accepted"}, 1},
		{[]string{"idempotent_retries"}, 1},
		{[]string{"messages_refused_by_code", "not_friends"}, 1},
		{[]string{"refusals_by_code", "not_friends"}, 1},
		{[]string{"refusals_by_code", "bad_request"}, 1},
		{[]string{"connect_refused_by_reason", "credentials"}, 1},
		{[]string{"limited_by_limit", "messages_per_second"}, 0},
	}
	for _, w := range want {
		if got := statsNum(t, s, w.path...); got != w.v {
			t.Errorf("/stats %q = %v, want %v", w.path, got, w.v)
		}
	}
	for _, k := range [][]string{{"commits"}, {"commit_latency_seconds", "count"}, {"commit_latency_seconds", "p99"},
		{"deliver_latency_seconds", "count"}, {"stream_entries"}, {"store_bytes"},
		{"broker", "clients_connected"}, {"broker", "messages_received"}, {"broker", "bytes_received"}, {"broker", "started"}} {
		if got := statsNum(t, s, k...); got <= 0 {
			t.Errorf("/stats %q = %v, want more than 0", k, got)
		}
	}
	if p50, p99 := statsNum(t, s, "commit_latency_seconds", "p50"), statsNum(t, s, "commit_latency_seconds", "p99"); p50 > p99 {
		t.Errorf("commit latency p50 %v > p99 %v", p50, p99)
	}
	if fi, err := os.Stat(b.Dir + "/imqtt.db"); err != nil || statsNum(t, s, "store_bytes") != float64(fi.Size()) {
		t.Errorf("store_bytes = %v, want the size of imqtt.db (%v)", statsNum(t, s, "store_bytes"), err)
	}

	// bob's device comes back and gets the DM: the backlog is gone.
	bo := b.Connect(t, "bob", true)
	if code, err := bo.Subscribe("im/u/bob/#", 1); err != nil || code > 1 {
		t.Fatalf("subscribe: %v %x", err, code)
	}
	bo.NextOn(t, "im/u/bob/dm/alice")
	brokertest.Eventually(t, "the backlog to empty", func() bool {
		s = statsJSON(t, b)
		return statsNum(t, s, "backlog") == 0 && statsNum(t, s, "oldest_backlog_age_seconds") == 0
	})
	if got := statsNum(t, s, "users_online"); got != 2 {
		t.Errorf("users_online = %v with alice and bob connected, want 2", got)
	}
}

// statsScrape GETs /metrics and parses it with Prometheus' own parser, with
// the classic (legacy) name rules.
func statsScrape(t *testing.T, b *brokertest.B) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	status, body := statsHTTP(t, b, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams, string(body)
}

// statsSample returns the value of the sample of family name with exactly
// labels, and whether there is one.
func statsSample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	b := brokertest.Start(t, nil)
	statsActivity(t, b)
	var fams map[string]*dto.MetricFamily
	var text string
	brokertest.Eventually(t, "/metrics to show the DM waiting for bob's device", func() bool {
		fams, text = statsScrape(t, b)
		v, _ := statsSample(fams, "imqtt_backlog", nil)
		return v == 1
	})

	types := map[string]dto.MetricType{"gauge": dto.MetricType_GAUGE, "counter": dto.MetricType_COUNTER, "histogram": dto.MetricType_HISTOGRAM}
	documented := map[string]bool{}
	for _, r := range docTable(t, "## `/metrics` families") {
		name, typ, labels := r[0], r[1], r[2]
		documented[name] = true
		f, ok := fams[name]
		if !ok {
			t.Errorf("/metrics has no family %s", name)
			continue
		}
		if f.GetType() != types[typ] {
			t.Errorf("%s is a %v, STATS.md says %s", name, f.GetType(), typ)
		}
		var want []string
		for _, l := range strings.Split(labels, ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				want = append(want, l)
			}
		}
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s has labels %v, STATS.md says %v", name, got, want)
				break
			}
		}
		switch {
		case typ == "counter" && !strings.HasSuffix(name, "_total"):
			t.Errorf("counter %s does not end in _total", name)
		case typ != "counter" && strings.HasSuffix(name, "_total"):
			t.Errorf("%s %s ends in _total", typ, name)
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "imqtt_") && !documented[name] {
			t.Errorf("/metrics has %s, STATS.md does not document it", name)
		}
	}
	for _, std := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[std]; !ok {
			t.Errorf("/metrics lacks the standard family %s", std)
		}
	}
	if strings.Contains(text, "evil") {
		t.Errorf("a client-chosen op reached a label:\n%s", text)
	}

	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"imqtt_users", nil, 3},
		{"imqtt_users_online", nil, 1},
		{"imqtt_devices_online", nil, 1},
		{"imqtt_conversations", nil, 1},
		{"imqtt_groups", nil, 0},
		{"imqtt_messages", nil, 1},
		{"imqtt_backlog", nil, 1},
		{"imqtt_backlog_devices", nil, 1},
		{"imqtt_requests_total", map[string]string{"op": "friend.list", "code": "ok"}, 1},
		{"imqtt_requests_total", map[string]string{"op": "", "code": "bad_request"}, 1},
		{"imqtt_requests_total", map[string]string{"op": "history", "code": "ok"}, 0},
		{"imqtt_messages_accepted_total", nil, 1},
		{"imqtt_idempotent_retries_total", nil, 1},
		{"imqtt_messages_refused_total", map[string]string{"code": "not_friends"}, 1},
		{"imqtt_messages_refused_total", map[string]string{"code": "too_large"}, 0},
		{"imqtt_connect_refused_total", map[string]string{"reason": "credentials"}, 1},
		{"imqtt_limited_total", map[string]string{"limit": "requests_per_second"}, 0},
		{"imqtt_broker_info", map[string]string{"version": "2.7.9"}, 1},
	}
	for _, w := range want {
		got, ok := statsSample(fams, w.name, w.labels)
		if !ok || got != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	for _, name := range []string{"imqtt_commits_total", "imqtt_commit_duration_seconds", "imqtt_deliver_latency_seconds",
		"imqtt_store_bytes", "imqtt_stream_entries", "imqtt_oldest_backlog_age_seconds",
		"imqtt_broker_messages_received_total", "imqtt_broker_received_bytes_total", "imqtt_broker_clients_connected"} {
		if got, ok := statsSample(fams, name, nil); !ok || got <= 0 {
			t.Errorf("%s = %v (present %v), want more than 0", name, got, ok)
		}
	}
	// /stats and /metrics report the same store.
	s := statsJSON(t, b)
	for _, k := range []string{"users", "messages", "conversations", "groups"} {
		if got, _ := statsSample(fams, "imqtt_"+k, nil); got != statsNum(t, s, k) {
			t.Errorf("imqtt_%s = %v, /stats %s = %v", k, got, k, statsNum(t, s, k))
		}
	}
}

// statsGet GETs url, with basic auth unless user and password are both "",
// and returns the status and the body.
func statsGet(t *testing.T, url, user, password string) (int, []byte) {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" || password != "" {
		r.SetBasicAuth(user, password)
	}
	c := &http.Client{Timeout: brokertest.Timeout}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, body
}

// TestStatsOpen checks that /stats and /metrics need no credentials on
// any listener address (PROTOCOL.md section 7 lists them without any),
// the wildcard binds of the default ":8080" included, while the admin API
// on the same listener still wants an operator.
func TestStatsOpen(t *testing.T) {
	binds := []struct{ name, bind string }{
		{"loopback", "127.0.0.1:0"},
		{"wildcard v4", "0.0.0.0:0"},
		{"all interfaces", ":0"},
	}
	creds := []struct {
		name, user, password string
	}{
		{"no credentials", "", ""},
		{"wrong password", "root", "nope"},
		{"not an operator", "alice", "pw-alice"},
		{"unknown user", "mallory", "pw-mallory"},
		{"operator", "root", "pw-root"},
	}
	for _, bb := range binds {
		t.Run(bb.name, func(t *testing.T) {
			b := brokertest.Start(t, func(c *broker.Config) { c.Listen.HTTP = bb.bind })
			b.AddUser("root", "pw-root", imqtt.RoleOperator)
			b.Users("alice")
			_, port, err := net.SplitHostPort(b.Addr("http"))
			if err != nil {
				t.Fatalf("http address %q: %v", b.Addr("http"), err)
			}
			base := "http://127.0.0.1:" + port
			for _, c := range creds {
				t.Run(c.name, func(t *testing.T) {
					status, body := statsGet(t, base+"/stats", c.user, c.password)
					if status != http.StatusOK {
						t.Fatalf("GET /stats: %d %s", status, body)
					}
					var m map[string]any
					if err := json.Unmarshal(body, &m); err != nil {
						t.Fatalf("GET /stats: %v\n%s", err, body)
					}
					if got := statsNum(t, m, "users"); got != 2 {
						t.Errorf("/stats users = %v, want 2", got)
					}
					status, body = statsGet(t, base+"/metrics", c.user, c.password)
					if status != http.StatusOK || !strings.Contains(string(body), "\nimqtt_users 2\n") {
						t.Fatalf("GET /metrics: %d, want 200 with imqtt_users 2:\n%s", status, body)
					}
				})
			}
			// Open figures open nothing else.
			if status, body := statsGet(t, base+"/v1/users", "", ""); status != http.StatusUnauthorized {
				t.Errorf("GET /v1/users without credentials: %d %s, want 401", status, body)
			}
			if status, body := statsGet(t, base+"/v1/users", "alice", "pw-alice"); status != http.StatusForbidden {
				t.Errorf("GET /v1/users as a user: %d %s, want 403", status, body)
			}
		})
	}
}

// TestStatsNoIDs checks what makes /stats and /metrics fit to be open:
// aggregate figures only, never a user id, client id or message content.
func TestStatsNoIDs(t *testing.T) {
	b := brokertest.Start(t, nil)
	statsActivity(t, b)
	_, metrics := statsScrape(t, b)
	_, stats := statsHTTP(t, b, "/stats")
	for _, secret := range []string{"alice", "bob", "carol", "hi bob", "hi carol", "alice-dev", "bob-dev", "pw-alice", "wrong"} {
		if strings.Contains(string(stats), secret) {
			t.Errorf("/stats holds %q:\n%s", secret, stats)
		}
		if strings.Contains(metrics, secret) {
			t.Errorf("/metrics holds %q", secret)
		}
	}
}
