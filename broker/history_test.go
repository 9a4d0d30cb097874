package broker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// imHistMsg is a message as history returns it.
type imHistMsg struct {
	Conv string          `json:"conv"`
	Seq  int             `json:"seq"`
	ID   string          `json:"id"`
	From string          `json:"from"`
	TS   int64           `json:"ts"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
}

// history asks for a page and returns its messages, checking they are in
// strictly ascending seq.
func imHistory(t *testing.T, c *imClient, args imArgs) []imHistMsg {
	t.Helper()
	d := c.ok(t, "history", args)
	raw, err := json.Marshal(d["messages"])
	if err != nil {
		t.Fatal(err)
	}
	var out []imHistMsg
	if err := json.Unmarshal(raw, &out); err != nil || out == nil {
		t.Fatalf("history %v: messages %s: %v", args, raw, err)
	}
	for i := 1; i < len(out); i++ {
		if out[i].Seq <= out[i-1].Seq {
			t.Fatalf("history %v: seq %d after %d", args, out[i].Seq, out[i-1].Seq)
		}
	}
	return out
}

func imSeqs(ms []imHistMsg) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

// seqRange returns lo..hi.
func imSeqRange(lo, hi int) []int {
	var out []int
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

// fillDM has alice and bob send n messages to their DM (n a multiple of
// 2*devices), from several devices each at once so that commits are shared
// and the test stays quick. Message ids are "{device}-{i}".
func imFillDM(t *testing.T, b *brokertest.B, n, devices int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 2*devices)
	for _, pair := range [][2]string{{"alice", "bob"}, {"bob", "alice"}} {
		for d := range devices {
			// Not subscribed: the senders need no copies of their own.
			c, err := b.Dial(brokertest.Opts{V5: d%2 == 1, User: pair[0], Password: "pw-" + pair[0], ClientID: fmt.Sprintf("%s-fill%d", pair[0], d)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n / (2 * devices) {
					p := fmt.Sprintf(`{"id":"%s-%d","body":{"n":%d}}`, c.ID, i, i)
					if code, err := c.Publish("im/dm/"+pair[1], 1, []byte(p)); err != nil || code != 0 {
						errs <- fmt.Errorf("%s: message %d: code 0x%02x, %v", c.ID, i, code, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestHistoryPaging pages through 1,000 messages both ways and checks the
// limits and the refusals.
func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	// Ten devices each send at once, and the readers come on top.
	b := imStart(t, func(c *broker.Config) { c.Limits.ConnectionsPerUser = 20 })
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob", "carol")
	const n = 1000
	imFillDM(t, b, n, 10)
	a := imConnect(t, b, "alice", "", true)
	bo := imConnect(t, b, "bob", "", false)
	const dm = "dm:alice:bob"

	// Backwards from the latest, in pages of 100.
	var back []imHistMsg
	page := imHistory(t, a, imArgs{"conv": dm, "limit": 100})
	for len(page) > 0 {
		if len(page) != 100 {
			t.Fatalf("backward page of %d messages, want 100", len(page))
		}
		back = append(slices.Clone(page), back...)
		page = imHistory(t, a, imArgs{"conv": dm, "before": page[0].Seq, "limit": 100})
	}
	if !slices.Equal(imSeqs(back), imSeqRange(1, n)) {
		t.Fatalf("backward walk: seqs %v", imSeqs(back))
	}
	// Forwards from the start in pages of 137, bob asking.
	var fwd []imHistMsg
	for after := 0; ; {
		page := imHistory(t, bo, imArgs{"conv": dm, "after": after, "limit": 137})
		if len(page) == 0 {
			break
		}
		if want := min(137, n-after); len(page) != want {
			t.Fatalf("forward page after %d: %d messages, want %d", after, len(page), want)
		}
		fwd = append(fwd, page...)
		after = page[len(page)-1].Seq
	}
	if !slices.EqualFunc(back, fwd, func(x, y imHistMsg) bool {
		return x.Seq == y.Seq && x.ID == y.ID && x.From == y.From && x.TS == y.TS && string(x.Body) == string(y.Body)
	}) {
		t.Fatal("the backward and forward walks differ")
	}
	// Every message once, each sender's in the order it sent them, with
	// timestamps that never go back.
	next := map[string]int{}
	for i, m := range fwd {
		j := strings.LastIndexByte(m.ID, '-')
		k, err := strconv.Atoi(m.ID[j+1:])
		if j < 0 || err != nil {
			t.Fatalf("seq %d: id %q is none the test sent", m.Seq, m.ID)
		}
		dev := m.ID[:j]
		if k != next[dev] {
			t.Fatalf("seq %d: message %s, want %s-%d next", m.Seq, m.ID, dev, next[dev])
		}
		next[dev]++
		if m.Conv != dm || m.Type != "text" || string(m.Body) != fmt.Sprintf(`{"n":%d}`, k) || (m.From != "alice" && m.From != "bob") {
			t.Fatalf("seq %d: %+v", m.Seq, m)
		}
		if i > 0 && m.TS < fwd[i-1].TS {
			t.Fatalf("seq %d: ts %d before the previous %d", m.Seq, m.TS, fwd[i-1].TS)
		}
	}
	if len(next) != 20 {
		t.Fatalf("messages from %d devices, want 20", len(next))
	}

	for _, tc := range []struct {
		name string
		args imArgs
		want []int
	}{
		{"latest, default limit", imArgs{}, imSeqRange(n-49, n)},
		{"latest, limit 500", imArgs{"limit": 500}, imSeqRange(n-499, n)},
		{"latest, limit 1", imArgs{"limit": 1}, []int{n}},
		{"before, default limit", imArgs{"before": 500}, imSeqRange(450, 499)},
		{"before near the start", imArgs{"before": 5, "limit": 50}, imSeqRange(1, 4)},
		{"before the first", imArgs{"before": 1}, nil},
		{"before 0", imArgs{"before": 0}, nil},
		{"before past the end", imArgs{"before": n + 100, "limit": 3}, imSeqRange(n-2, n)},
		{"after, default limit", imArgs{"after": 500}, imSeqRange(501, 550)},
		{"after 0, limit 500", imArgs{"after": 0, "limit": 500}, imSeqRange(1, 500)},
		{"after near the end", imArgs{"after": n - 5, "limit": 50}, imSeqRange(n-4, n)},
		{"after the last", imArgs{"after": n}, nil},
		{"after past the end", imArgs{"after": n + 7}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := imArgs{"conv": dm}
			for k, v := range tc.args {
				args[k] = v
			}
			if got := imSeqs(imHistory(t, a, args)); !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
				t.Fatalf("seqs %v, want %v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args imArgs
	}{
		{"limit 0", imArgs{"limit": 0}},
		{"limit 501", imArgs{"limit": 501}},
		{"limit negative", imArgs{"limit": -1}},
		{"limit not a number", imArgs{"limit": "10"}},
		{"before and after", imArgs{"before": 10, "after": 2}},
		{"before negative", imArgs{"before": -1}},
		{"after negative", imArgs{"after": -1}},
		{"no conv", imArgs{"conv": nil}},
		{"conv ids out of order", imArgs{"conv": "dm:bob:alice"}},
		{"conv with oneself", imArgs{"conv": "dm:alice:alice"}},
		{"conv of no kind", imArgs{"conv": "alice:bob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := imArgs{"conv": dm}
			for k, v := range tc.args {
				if v == nil {
					delete(args, k)
				} else {
					args[k] = v
				}
			}
			a.fail(t, "history", args, imqtt.CodeBadRequest)
		})
	}

	t.Run("not a party", func(t *testing.T) {
		ca := imConnect(t, b, "carol", "", false)
		ca.fail(t, "history", imArgs{"conv": dm}, imqtt.CodeNotMember)
		ca.fail(t, "history", imArgs{"conv": dm, "after": 0, "limit": 500}, imqtt.CodeNotMember)
		// A DM of one's own with no messages is just empty.
		if got := imHistory(t, ca, imArgs{"conv": "dm:alice:carol"}); len(got) != 0 {
			t.Fatalf("empty DM: %v", got)
		}
	})
}

// TestHistoryGroupJoin: a member added later reads only what was sent after
// joining, whichever way it asks.
func TestHistoryGroupJoin(t *testing.T) {
	t.Parallel()
	b := imStart(t, nil)
	b.Users("alice", "bob", "carol")
	imFriends(t, b, "alice", "bob", "carol")
	a := imConnect(t, b, "alice", "", false)
	ca := imConnect(t, b, "carol", "", true)
	a.ok(t, "group.create", imArgs{"group": "team", "members": []string{"bob"}})
	if got := imHistory(t, a, imArgs{"conv": "g:team"}); len(got) != 0 {
		t.Fatalf("history of a new group: %v", got)
	}
	for i := 1; i <= 5; i++ {
		a.sendOK(t, "im/g/team", fmt.Sprintf("m%d", i), "before carol")
	}
	a.ok(t, "group.add", imArgs{"group": "team", "users": []string{"carol"}})
	ca.groupEvent(t, "group.joined", "team", "by", "alice")
	if got := imHistory(t, ca, imArgs{"conv": "g:team"}); len(got) != 0 {
		t.Fatalf("carol reads from before she joined: %v", imSeqs(got))
	}
	for i := 6; i <= 8; i++ {
		a.sendOK(t, "im/g/team", fmt.Sprintf("m%d", i), "with carol")
	}
	for _, tc := range []struct {
		name string
		args imArgs
		want []int
	}{
		{"latest", imArgs{}, imSeqRange(6, 8)},
		{"after 0", imArgs{"after": 0}, imSeqRange(6, 8)},
		{"after 2", imArgs{"after": 2, "limit": 2}, imSeqRange(6, 7)},
		{"before 8", imArgs{"before": 8}, imSeqRange(6, 7)},
		{"before 6", imArgs{"before": 6}, nil},
		{"before 3", imArgs{"before": 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := imArgs{"conv": "g:team"}
			for k, v := range tc.args {
				args[k] = v
			}
			if got := imSeqs(imHistory(t, ca, args)); !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
				t.Fatalf("seqs %v, want %v", got, tc.want)
			}
		})
	}
	// The members from the start read it all.
	if got := imSeqs(imHistory(t, a, imArgs{"conv": "g:team"})); !slices.Equal(got, imSeqRange(1, 8)) {
		t.Fatalf("alice: %v", got)
	}
}
