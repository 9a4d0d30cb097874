package chat_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// grpRecorder is a Notifier that remembers what it was told.
type grpRecorder struct {
	mu        sync.Mutex
	appended  [][]string
	transient map[string][][]byte
	online    map[string]bool
}

// Appended records a call; one naming nobody is no news and not recorded.
func (r *grpRecorder) Appended(users ...string) {
	if len(users) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.appended = append(r.appended, slices.Clone(users))
}

func (r *grpRecorder) Transient(user string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.transient[user] = append(r.transient[user], slices.Clone(payload))
}

func (r *grpRecorder) Online(user string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.online[user]
}

// take returns and forgets the users of the Appended calls so far, each
// call's sorted.
func (r *grpRecorder) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.appended
	r.appended = nil
	for _, us := range out {
		slices.Sort(us)
	}
	return out
}

// takeTransient returns and forgets who got transient events, sorted.
func (r *grpRecorder) takeTransient() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for u := range r.transient {
		out = append(out, u)
	}
	slices.Sort(out)
	r.transient = map[string][][]byte{}
	return out
}

type grpFixture struct {
	db  *bolt.DB
	rec *grpRecorder
	s   *chat.Service
}

// newGrpFixture opens a store in a temporary directory (checked for
// consistency at the end), with users and friendships among all of them.
func newGrpFixture(t *testing.T, maxMembers int, users ...string) *grpFixture {
	t.Helper()
	db, err := bolt.OpenDir(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
		db.Close()
	})
	for _, u := range users {
		if err := db.CreateUser(storage.User{ID: u, Role: imqtt.RoleUser, Hash: []byte("not a hash")}); err != nil {
			t.Fatal(err)
		}
	}
	err = db.Update(func(tx storage.Tx) error {
		for i, a := range users {
			for _, b := range users[i+1:] {
				if err := tx.SetFriends(a, b, 1); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &grpRecorder{transient: map[string][][]byte{}, online: map[string]bool{}}
	s := chat.New(chat.Options{Store: db, Notifier: rec, DMPolicy: acl.DMFriends, MaxPayload: 64 << 10, MaxGroupMembers: maxMembers})
	return &grpFixture{db: db, rec: rec, s: s}
}

// call makes a request as user and returns the decoded response.
func (f *grpFixture) call(t *testing.T, user, op string, args map[string]any) map[string]any {
	t.Helper()
	r := map[string]any{"rid": "r", "op": op}
	for k, v := range args {
		r[k] = v
	}
	p, _ := json.Marshal(r)
	resp, _, _ := f.s.Request(chat.Caller{User: user, ClientID: user + "-dev"}, p)
	var out map[string]any
	if err := json.Unmarshal(resp, &out); err != nil {
		t.Fatalf("response %s: %v", resp, err)
	}
	return out
}

func (f *grpFixture) ok(t *testing.T, user, op string, args map[string]any) map[string]any {
	t.Helper()
	r := f.call(t, user, op, args)
	if r["ok"] != true {
		t.Fatalf("%s %s %v: %v", user, op, args, r)
	}
	d, _ := r["data"].(map[string]any)
	return d
}

func (f *grpFixture) fail(t *testing.T, user, op string, args map[string]any, code imqtt.Code) {
	t.Helper()
	r := f.call(t, user, op, args)
	if e, _ := r["error"].(map[string]any); r["ok"] != false || e == nil || e["code"] != string(code) {
		t.Fatalf("%s %s %v: %v, want error %s", user, op, args, r, code)
	}
}

// stream returns user's stream after pos as event types or "conv#seq".
func (f *grpFixture) stream(t *testing.T, user string, after uint64) []string {
	t.Helper()
	es, err := f.db.ReadStream(user, after, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.Conv != "" {
			out = append(out, fmt.Sprintf("%s#%d", e.Conv, e.Seq))
			continue
		}
		var ev imqtt.Event
		if err := json.Unmarshal(e.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		s := ev.Type
		for _, x := range []string{ev.Group, ev.By, ev.User} {
			if x != "" {
				s += " " + x
			}
		}
		out = append(out, s)
	}
	return out
}

func (f *grpFixture) head(t *testing.T, user string) uint64 {
	t.Helper()
	h, err := f.db.StreamHead(user)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func grpWantCalls(t *testing.T, what string, got [][]string, want ...[]string) {
	t.Helper()
	if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Fatalf("%s: Appended calls %v, want %v", what, got, want)
	}
}

// TestGroupStreamsAndNotifications: each group op writes the events of
// PROTOCOL.md section 6 into the right streams and then tells the notifier
// exactly whose streams grew, once.
func TestGroupStreamsAndNotifications(t *testing.T) {
	f := newGrpFixture(t, 0, "alice", "bob", "carol", "dave")
	f.ok(t, "alice", "group.create", map[string]any{"group": "team", "members": []string{"bob", "carol"}})
	grpWantCalls(t, "create", f.rec.take(), []string{"alice", "bob", "carol"})
	for _, u := range []string{"alice", "bob", "carol"} {
		if got := f.stream(t, u, 0); !slices.Equal(got, []string{"group.joined team alice"}) {
			t.Fatalf("%s after create: %v", u, got)
		}
	}
	if h := f.head(t, "dave"); h != 0 {
		t.Fatalf("dave's stream grew: head %d", h)
	}

	res, err := f.s.SendGroup("bob", "team", []byte(`{"id":"b1","body":"hi"}`))
	if err != nil || res.Seq != 1 || res.Duplicate || res.Conv != "g:team" || res.ID != "b1" {
		t.Fatalf("send: %+v, %v", res, err)
	}
	grpWantCalls(t, "send", f.rec.take(), []string{"alice", "bob", "carol"})
	again, err := f.s.SendGroup("bob", "team", []byte(`{"id":"b1","body":"hi"}`))
	if err != nil || again.Seq != 1 || !again.Duplicate {
		t.Fatalf("resend: %+v, %v", again, err)
	}
	grpWantCalls(t, "resend", f.rec.take())

	marks := map[string]uint64{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		marks[u] = f.head(t, u)
	}
	f.ok(t, "alice", "group.add", map[string]any{"group": "team", "users": []string{"dave", "bob"}})
	grpWantCalls(t, "add", f.rec.take(), []string{"alice", "bob", "carol", "dave"})
	for _, u := range []string{"alice", "bob", "carol"} {
		if got := f.stream(t, u, marks[u]); !slices.Equal(got, []string{"group.member_added team dave"}) {
			t.Fatalf("%s after add: %v", u, got)
		}
	}
	if got := f.stream(t, "dave", marks["dave"]); !slices.Equal(got, []string{"group.joined team alice"}) {
		t.Fatalf("dave after add: %v", got)
	}

	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		marks[u] = f.head(t, u)
	}
	f.ok(t, "alice", "group.kick", map[string]any{"group": "team", "user": "carol"})
	grpWantCalls(t, "kick", f.rec.take(), []string{"alice", "bob", "carol", "dave"})
	if got := f.stream(t, "carol", marks["carol"]); !slices.Equal(got, []string{"group.left team alice"}) {
		t.Fatalf("carol after kick: %v", got)
	}
	for _, u := range []string{"alice", "bob", "dave"} {
		if got := f.stream(t, u, marks[u]); !slices.Equal(got, []string{"group.member_removed team carol"}) {
			t.Fatalf("%s after kick: %v", u, got)
		}
	}
	marks["carol"] = f.head(t, "carol")
	if _, err := f.s.SendGroup("dave", "team", []byte(`{"body":"after"}`)); err != nil {
		t.Fatal(err)
	}
	grpWantCalls(t, "send after kick", f.rec.take(), []string{"alice", "bob", "dave"})
	if h := f.head(t, "carol"); h != marks["carol"] {
		t.Fatalf("carol's stream grew after the kick: %v", f.stream(t, "carol", marks["carol"]))
	}
	if got := f.stream(t, "bob", 0); got[len(got)-1] != "g:team#2" {
		t.Fatalf("bob's stream ends %v, want the message g:team#2", got)
	}

	f.ok(t, "bob", "read", map[string]any{"conv": "g:team", "seq": 2})
	grpWantCalls(t, "read", f.rec.take(), []string{"alice", "bob", "dave"})
	f.ok(t, "bob", "read", map[string]any{"conv": "g:team", "seq": 1})
	grpWantCalls(t, "read backwards", f.rec.take())

	f.ok(t, "alice", "group.leave", map[string]any{"group": "team"})
	grpWantCalls(t, "owner leaves", f.rec.take(), []string{"alice", "bob", "dave"})
	if d := f.ok(t, "bob", "group.info", map[string]any{"group": "team"}); d["owner"] != "bob" {
		t.Fatalf("owner after alice left: %v", d)
	}
	f.ok(t, "bob", "group.leave", map[string]any{"group": "team"})
	f.ok(t, "dave", "group.leave", map[string]any{"group": "team"})
	grpWantCalls(t, "the rest leave", f.rec.take(), []string{"bob", "dave"}, []string{"dave"})
	f.fail(t, "dave", "group.info", map[string]any{"group": "team"}, imqtt.CodeNoSuchGroup)

	// Refusals change nothing and tell nobody.
	f.fail(t, "alice", "group.create", map[string]any{"group": "x", "members": []string{"zed"}}, imqtt.CodeNoSuchUser)
	f.fail(t, "alice", "group.add", map[string]any{"group": "team", "users": []string{"bob"}}, imqtt.CodeNoSuchGroup)
	grpWantCalls(t, "refusals", f.rec.take())
}

// TestGroupMessageStoredOnce: a message to a group is stored once however
// many members it has; their streams hold references to it.
func TestGroupMessageStoredOnce(t *testing.T) {
	users := make([]string, 40)
	for i := range users {
		users[i] = fmt.Sprintf("u%03d", i)
	}
	f := newGrpFixture(t, 0, users...)
	f.ok(t, users[0], "group.create", map[string]any{"group": "big", "members": users[1:]})
	body := strings.Repeat("x", 32<<10)
	p, _ := json.Marshal(map[string]string{"body": body})
	// Warm up: the first message creates the conversation's buckets.
	if _, err := f.s.SendGroup(users[1], "big", []byte(`{"body":"first"}`)); err != nil {
		t.Fatal(err)
	}
	before := f.db.Size()
	const n = 5
	for range n {
		if _, err := f.s.SendGroup(users[1], "big", p); err != nil {
			t.Fatal(err)
		}
	}
	grown := f.db.Size() - before
	// A copy per member would be 40 x 5 x 32 KiB, over 6 MiB.
	if limit := int64(n * len(p) * 8); grown > limit {
		t.Fatalf("the store grew by %d bytes for %d messages of %d bytes to %d members; want under %d", grown, n, len(p), len(users), limit)
	}
	es, err := f.db.ReadStream(users[37], 0, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	last := es[len(es)-1]
	if last.Conv != "g:big" || last.Seq != n+1 || !strings.Contains(string(last.Payload), body) {
		t.Fatalf("a member's last entry: %s#%d, %d bytes", last.Conv, last.Seq, len(last.Payload))
	}
}

// TestGroupCreateCap: the cap counts the members the group would have.
func TestGroupCreateCap(t *testing.T) {
	f := newGrpFixture(t, 3, "alice", "bob", "carol", "dave")
	f.fail(t, "alice", "group.create", map[string]any{"group": "four", "members": []string{"bob", "carol", "dave"}}, imqtt.CodeBadRequest)
	f.ok(t, "alice", "group.create", map[string]any{"group": "three", "members": []string{"bob", "carol"}})
	f.fail(t, "alice", "group.add", map[string]any{"group": "three", "users": []string{"dave"}}, imqtt.CodeBadRequest)
	f.ok(t, "alice", "group.add", map[string]any{"group": "three", "users": []string{"bob"}})
	grpWantCalls(t, "refused and empty additions", f.rec.take()[1:])

	// Three distinct members, however they are named.
	r := f.call(t, "alice", "group.create", map[string]any{"group": "dups", "members": []string{"bob", "bob", "alice", "carol"}})
	if r["ok"] != true {
		t.Fatalf("a group of 3 distinct members named with duplicates is refused under a cap of 3: %v", r)
	}
	if d := f.ok(t, "bob", "group.info", map[string]any{"group": "dups"}); !slices.Equal(grpStrings(d["members"]), []string{"alice", "bob", "carol"}) {
		t.Fatalf("members: %v", d)
	}
}

func grpStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestGeneratedGroupIDs: ids made for groups created without one are valid
// and distinct.
func TestGeneratedGroupIDs(t *testing.T) {
	f := newGrpFixture(t, 0, "alice")
	seen := map[string]bool{}
	for range 50 {
		d := f.ok(t, "alice", "group.create", nil)
		g, _ := d["group"].(string)
		if !imqtt.ValidID(g) || seen[g] {
			t.Fatalf("generated id %q: invalid or seen before", g)
		}
		seen[g] = true
	}
}

// TestTransientRecipients: typing goes to the other members not blocked
// either way; presence to friends not blocked either way; neither is
// stored.
func TestTransientRecipients(t *testing.T) {
	f := newGrpFixture(t, 0, "alice", "bob", "carol", "dave", "erin")
	if err := f.db.Update(func(tx storage.Tx) error {
		if err := tx.Unfriend("alice", "erin"); err != nil {
			return err
		}
		if err := tx.SetBlock("dave", "alice", 1, true); err != nil {
			return err
		}
		return tx.SetBlock("alice", "carol", 1, true)
	}); err != nil {
		t.Fatal(err)
	}
	f.ok(t, "bob", "group.create", map[string]any{"group": "team", "members": []string{"alice", "carol", "dave", "erin"}})
	f.rec.take()
	heads := map[string]uint64{}
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin"} {
		heads[u] = f.head(t, u)
	}

	f.ok(t, "alice", "typing", map[string]any{"conv": "g:team"})
	if got := f.rec.takeTransient(); !slices.Contains(got, "bob") || !slices.Contains(got, "erin") ||
		slices.Contains(got, "alice") || slices.Contains(got, "carol") || slices.Contains(got, "dave") {
		t.Fatalf("typing in the group went to %v; want bob and erin only", got)
	}
	f.ok(t, "alice", "typing", map[string]any{"conv": "dm:alice:bob"})
	if got := f.rec.takeTransient(); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("typing in a DM went to %v", got)
	}

	if err := f.s.PresenceChanged("alice", true); err != nil {
		t.Fatal(err)
	}
	if got := f.rec.takeTransient(); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("alice's presence went to %v; want bob (carol and dave blocked, erin no friend)", got)
	}
	if err := f.s.PresenceChanged("carol", false); err != nil {
		t.Fatal(err)
	}
	if got := f.rec.takeTransient(); !slices.Equal(got, []string{"bob", "dave", "erin"}) {
		t.Fatalf("carol's presence went to %v", got)
	}
	grpWantCalls(t, "typing and presence", f.rec.take())
	for u, h := range heads {
		if now := f.head(t, u); now != h {
			t.Fatalf("%s's stream grew by typing or presence: %v", u, f.stream(t, u, h))
		}
	}

	f.rec.online = map[string]bool{"bob": true, "carol": true, "dave": true, "erin": true}
	if d := f.ok(t, "alice", "presence", nil); !slices.Equal(grpStrings(d["online"]), []string{"bob"}) {
		t.Fatalf("alice's presence op: %v", d)
	}
}
