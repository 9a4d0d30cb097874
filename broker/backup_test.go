package broker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage/bolt"
)

// backupDownload fetches GET /v1/backup as the operator into a file.
func backupDownload(t *testing.T, b *brokertest.B) string {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+b.Addr("http")+"/v1/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("root", "pw-root")
	resp, err := (&http.Client{Timeout: brokertest.Timeout}).Do(req)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("backup: status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != "attachment; filename=imqtt.db" {
		t.Errorf("Content-Disposition %q", cd)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatalf("backup backupDownload: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// backupOpen opens a downloaded copy and runs bbolt's consistency check.
func backupOpen(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("backup does not open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Check(); err != nil {
		t.Fatalf("backup fails its check: %v", err)
	}
	return db
}

// TestBackupWhileServing takes a backup while publishers send DMs: the copy
// must be a consistent store holding every user created and every message
// acknowledged before the backup began.
func TestBackupWhileServing(t *testing.T) {
	const publishers = 10
	b, a := admStart(t, func(c *broker.Config) {
		c.DMPolicy = "anyone"
		c.Limits.MessagesPerSecond = 1e6
	})
	a.root("POST", "/v1/users", `{"user":"sink","password":"pw-sink"}`, http.StatusCreated)
	a.root("POST", "/v1/users", `{"user":"ops2","password":"pw-ops2","role":"operator"}`, http.StatusCreated)
	for i := range publishers {
		a.root("POST", "/v1/users", fmt.Sprintf(`{"user":"p%d","password":"pw-p%d"}`, i, i), http.StatusCreated)
	}

	var (
		mu    sync.Mutex
		acked = make([][]string, publishers) // ids accepted, per publisher
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		errs  = make(chan error, publishers)
	)
	count := func() (total, least int) {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		least = -1
		for _, ids := range acked {
			total += len(ids)
			if least < 0 || len(ids) < least {
				least = len(ids)
			}
		}
		return total, least
	}
	for i := range publishers {
		user := fmt.Sprintf("p%d", i)
		// MQTT 5, so that the PUBACK says whether the message was accepted.
		c, err := b.Dial(brokertest.Opts{V5: true, User: user, Password: "pw-" + user, ClientID: user + "-dev"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%s-%d", user, n)
				code, err := c.Publish("im/dm/sink", 1, []byte(`{"id":"`+id+`","body":"x"}`))
				if err != nil || code != 0 {
					errs <- fmt.Errorf("%s: publish %s: code %x err %v", user, id, code, err)
					return
				}
				mu.Lock()
				acked[i] = append(acked[i], id)
				mu.Unlock()
			}
		}()
	}
	stopAll := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopAll)

	brokertest.Eventually(t, "every publisher acknowledged", func() bool { _, least := count(); return least >= 3 })
	mu.Lock()
	before := make([][]string, publishers)
	for i := range acked {
		before[i] = append([]string(nil), acked[i]...)
	}
	mu.Unlock()
	path := backupDownload(t, b)
	totalAtBackup, _ := count()
	// The broker served on during and after the backup.
	brokertest.Eventually(t, "publishes after the backup", func() bool { n, _ := count(); return n > totalAtBackup })
	stopAll()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	db := backupOpen(t, path)
	users, err := db.ListUsers()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]imqtt.Role{}
	for _, u := range users {
		got[u.ID] = u.Role
	}
	if got["sink"] != imqtt.RoleUser || got["ops2"] != imqtt.RoleOperator || got["root"] != imqtt.RoleOperator || len(got) != 5+publishers {
		t.Fatalf("users in the backup: %v", got)
	}
	// Read the messages back the way clients do, from a broker restored
	// onto the copy.
	dir := t.TempDir()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, bolt.FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	r := brokertest.StartIn(t, dir, nil)
	sink := r.Connect(t, "sink", true)
	if code, err := sink.Subscribe("im/u/sink/res", 1); err != nil || code != 1 {
		t.Fatalf("subscribe: %x %v", code, err)
	}
	stored := 0
	for i, ids := range before {
		peer := fmt.Sprintf("p%d", i)
		msgs := backupHistory(t, sink, imqtt.DMConv(peer, "sink"))
		have := map[string]bool{}
		for n, m := range msgs {
			if m.Seq != n+1 || m.From != peer {
				t.Fatalf("%s: message %d is seq %d from %s", peer, n+1, m.Seq, m.From)
			}
			have[m.ID] = true
		}
		for _, id := range ids {
			if !have[id] {
				t.Fatalf("message %s acknowledged before the backup is not in it", id)
			}
		}
		stored += len(msgs)
	}
	t.Logf("backup holds %d messages; %d were acknowledged before it began", stored, backupCount(before))
}

type backupMsg struct {
	Seq  int
	ID   string
	From string
}

// backupHistory reads a whole conversation with the history request.
func backupHistory(t *testing.T, c *brokertest.Client, conv imqtt.ConvID) []backupMsg {
	t.Helper()
	var all []backupMsg
	for page := 0; ; page++ {
		rid := fmt.Sprintf("h%d", page)
		q := fmt.Sprintf(`{"rid":%q,"op":"history","conv":%q,"after":%d,"limit":500}`, rid, conv, len(all))
		if _, err := c.Publish("im/req", 1, []byte(q)); err != nil {
			t.Fatalf("history: %v", err)
		}
		var resp struct {
			RID  string
			OK   bool
			Data struct{ Messages []backupMsg }
		}
		m := c.NextOn(t, "im/u/sink/res")
		if err := json.Unmarshal(m.Payload, &resp); err != nil || !resp.OK || resp.RID != rid {
			t.Fatalf("history response %s: %v", m.Payload, err)
		}
		all = append(all, resp.Data.Messages...)
		if len(resp.Data.Messages) < 500 {
			return all
		}
	}
}

func backupCount(ids [][]string) int {
	n := 0
	for _, x := range ids {
		n += len(x)
	}
	return n
}

// TestBackupRestore restores a downloaded copy the documented way (stop,
// copy into DATA/imqtt.db, start) and logs in with what it held.
func TestBackupRestore(t *testing.T) {
	b, a := admStart(t, nil)
	a.root("POST", "/v1/users", `{"user":"dave","password":"pw-dave"}`, http.StatusCreated)
	path := backupDownload(t, b)
	a.root("DELETE", "/v1/users/dave", "", http.StatusNoContent)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, bolt.FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	r := brokertest.StartIn(t, b.Dir, nil)
	c, err := r.Dial(brokertest.Opts{User: "dave", Password: "pw-dave", ClientID: "dave-dev"})
	if err != nil {
		t.Fatalf("user from the backup cannot connect after restore: %v", err)
	}
	c.Close()
}
