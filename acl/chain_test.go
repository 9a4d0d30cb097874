package acl_test

import (
	"errors"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
)

// pair is an ordered pair of user ids.
type pair struct{ a, b string }

// fakeGraph is a relationship graph in two maps. Friendship is stored in one
// direction only, as a caller might, so that the decisions are shown to ask
// for it symmetrically; blocks are directed by nature.
type fakeGraph struct {
	friends map[pair]bool
	blocks  map[pair]bool // a has blocked b
	err     error         // returned by every lookup when set
}

func (g *fakeGraph) AreFriends(a, b string) (bool, error) {
	if g.err != nil {
		return false, g.err
	}
	return g.friends[pair{a, b}] || g.friends[pair{b, a}], nil
}

func (g *fakeGraph) Blocks(a, b string) (bool, error) {
	if g.err != nil {
		return false, g.err
	}
	return g.blocks[pair{a, b}], nil
}

// world: alice and bob are friends; carol is a stranger to both; dave is
// alice's friend but dave blocked alice; alice blocked erin, her friend; frank
// blocked gina and gina blocked frank, strangers.
func world() *fakeGraph {
	return &fakeGraph{
		friends: map[pair]bool{{"alice", "bob"}: true, {"dave", "alice"}: true, {"alice", "erin"}: true},
		blocks:  map[pair]bool{{"dave", "alice"}: true, {"alice", "erin"}: true, {"frank", "gina"}: true, {"gina", "frank"}: true},
	}
}

func TestBlocked(t *testing.T) {
	g := world()
	tests := []struct {
		a, b string
		want bool
	}{
		{"alice", "bob", false},
		{"alice", "dave", true}, // dave blocked alice
		{"dave", "alice", true},
		{"alice", "erin", true}, // alice blocked erin
		{"erin", "alice", true},
		{"frank", "gina", true},
		{"alice", "carol", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"-"+tt.b, func(t *testing.T) {
			got, err := acl.Blocked(g, tt.a, tt.b)
			if err != nil || got != tt.want {
				t.Errorf("Blocked(%s, %s) = %v, %v; want %v", tt.a, tt.b, got, err, tt.want)
			}
		})
	}
}

func TestCanDM(t *testing.T) {
	g := world()
	tests := []struct {
		name     string
		policy   acl.DMPolicy
		from, to string
		want     error // nil, or a sentinel errors.Is must match
	}{
		{"friends", acl.DMFriends, "alice", "bob", nil},
		{"friends reverse", acl.DMFriends, "bob", "alice", nil},
		{"strangers", acl.DMFriends, "alice", "carol", imqtt.ErrNotFriends},
		{"strangers reverse", acl.DMFriends, "carol", "alice", imqtt.ErrNotFriends},
		{"friend blocked the sender", acl.DMFriends, "alice", "dave", imqtt.ErrNotAllowed},
		{"blocker to blocked friend", acl.DMFriends, "dave", "alice", imqtt.ErrNotAllowed},
		{"sender blocked the friend", acl.DMFriends, "alice", "erin", imqtt.ErrNotAllowed},
		{"blocked friend to blocker", acl.DMFriends, "erin", "alice", imqtt.ErrNotAllowed},
		{"mutual block strangers", acl.DMFriends, "frank", "gina", imqtt.ErrNotAllowed},
		{"oneself", acl.DMFriends, "alice", "alice", imqtt.ErrBadRequest},
		{"oneself stranger", acl.DMFriends, "carol", "carol", imqtt.ErrBadRequest},

		{"anyone: friends", acl.DMAnyone, "alice", "bob", nil},
		{"anyone: strangers", acl.DMAnyone, "alice", "carol", nil},
		{"anyone: strangers reverse", acl.DMAnyone, "carol", "alice", nil},
		{"anyone: block holds", acl.DMAnyone, "alice", "dave", imqtt.ErrNotAllowed},
		{"anyone: block holds reverse", acl.DMAnyone, "dave", "alice", imqtt.ErrNotAllowed},
		{"anyone: own block holds", acl.DMAnyone, "alice", "erin", imqtt.ErrNotAllowed},
		{"anyone: stranger block holds", acl.DMAnyone, "gina", "frank", imqtt.ErrNotAllowed},
		{"anyone: oneself", acl.DMAnyone, "alice", "alice", imqtt.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := acl.CanDM(g, tt.policy, tt.from, tt.to)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CanDM(%s, %s) = %v; want nil", tt.from, tt.to, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("CanDM(%s, %s) = %v; want %v", tt.from, tt.to, err, tt.want)
			}
		})
	}
}

func TestCanRequestFriend(t *testing.T) {
	g := world()
	tests := []struct {
		name     string
		from, to string
		want     error
	}{
		{"stranger", "alice", "carol", nil},
		{"stranger reverse", "carol", "alice", nil},
		// Asking a friend is allowed here; the application turns it into a
		// no-op success.
		{"friend", "alice", "bob", nil},
		{"blocked by target", "alice", "dave", imqtt.ErrNotAllowed},
		{"target blocked by caller", "dave", "alice", imqtt.ErrNotAllowed},
		{"caller blocked target", "alice", "erin", imqtt.ErrNotAllowed},
		{"blocked caller", "erin", "alice", imqtt.ErrNotAllowed},
		{"mutual block", "frank", "gina", imqtt.ErrNotAllowed},
		{"oneself", "alice", "alice", imqtt.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := acl.CanRequestFriend(g, tt.from, tt.to)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CanRequestFriend(%s, %s) = %v; want nil", tt.from, tt.to, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("CanRequestFriend(%s, %s) = %v; want %v", tt.from, tt.to, err, tt.want)
			}
		})
	}
}

func TestSeesPresence(t *testing.T) {
	g := world()
	tests := []struct {
		name          string
		watcher, user string
		want          bool
	}{
		{"friend", "alice", "bob", true},
		{"friend reverse", "bob", "alice", true},
		{"stranger", "alice", "carol", false},
		{"stranger reverse", "carol", "alice", false},
		{"friend who blocked the watcher", "alice", "dave", false},
		{"friend the watcher blocked", "dave", "alice", false},
		{"watcher blocked the friend", "alice", "erin", false},
		{"blocked friend watching", "erin", "alice", false},
		{"blocked strangers", "frank", "gina", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := acl.SeesPresence(g, tt.watcher, tt.user)
			if err != nil || got != tt.want {
				t.Fatalf("SeesPresence(%s, %s) = %v, %v; want %v", tt.watcher, tt.user, got, err, tt.want)
			}
		})
	}
}

// A store failure must come out as an error, never as a decision: a failed
// block lookup read as "no block" would let a blocked user through.
func TestChainStoreErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	g := world()
	g.err = boom
	if err := acl.CanDM(g, acl.DMFriends, "alice", "bob"); !errors.Is(err, boom) {
		t.Errorf("CanDM = %v; want the store error", err)
	}
	if err := acl.CanDM(g, acl.DMAnyone, "alice", "carol"); !errors.Is(err, boom) {
		t.Errorf("CanDM anyone = %v; want the store error", err)
	}
	if err := acl.CanRequestFriend(g, "alice", "carol"); !errors.Is(err, boom) {
		t.Errorf("CanRequestFriend = %v; want the store error", err)
	}
	if ok, err := acl.SeesPresence(g, "alice", "bob"); ok || !errors.Is(err, boom) {
		t.Errorf("SeesPresence = %v, %v; want false and the store error", ok, err)
	}
	if ok, err := acl.Blocked(g, "alice", "bob"); !errors.Is(err, boom) {
		t.Errorf("Blocked = %v, %v; want the store error", ok, err)
	}
}

// failAfter fails only lookups of one kind, to reach the error paths that
// follow a successful first lookup.
type failAfter struct {
	*fakeGraph
	friendsErr, blocksErr error
	blockCalls            int
	failBlockCall         int // 1-based call of Blocks that fails; 0: none
}

func (g *failAfter) AreFriends(a, b string) (bool, error) {
	if g.friendsErr != nil {
		return false, g.friendsErr
	}
	return g.fakeGraph.AreFriends(a, b)
}

func (g *failAfter) Blocks(a, b string) (bool, error) {
	g.blockCalls++
	if g.blockCalls == g.failBlockCall {
		return false, g.blocksErr
	}
	return g.fakeGraph.Blocks(a, b)
}

func TestChainPartialStoreErrors(t *testing.T) {
	boom := errors.New("io error")
	// The reverse block lookup failing must not read as "no block".
	g := &failAfter{fakeGraph: world(), blocksErr: boom, failBlockCall: 2}
	if err := acl.CanDM(g, acl.DMFriends, "alice", "bob"); !errors.Is(err, boom) {
		t.Errorf("CanDM with the second Blocks failing = %v; want the store error", err)
	}
	g = &failAfter{fakeGraph: world(), friendsErr: boom}
	if err := acl.CanDM(g, acl.DMFriends, "alice", "bob"); !errors.Is(err, boom) {
		t.Errorf("CanDM with AreFriends failing = %v; want the store error", err)
	}
	g = &failAfter{fakeGraph: world(), blocksErr: boom, failBlockCall: 1}
	if _, err := acl.SeesPresence(g, "alice", "bob"); !errors.Is(err, boom) {
		t.Errorf("SeesPresence with Blocks failing: err = %v; want the store error", err)
	}
	t.Run("SeesPresence fails closed", func(t *testing.T) {
		g := &failAfter{fakeGraph: world(), blocksErr: boom, failBlockCall: 1}
		if ok, _ := acl.SeesPresence(g, "alice", "bob"); ok {
			t.Errorf("SeesPresence with Blocks failing = true; want false (a caller that drops the error must not leak presence)")
		}
	})
}

// CanDM runs on every DM publish: it must not allocate, neither when it
// allows nor when it refuses.
func TestCanDMAllocs(t *testing.T) {
	g := world()
	var gr acl.Graph = g
	paths := []struct {
		name     string
		policy   acl.DMPolicy
		from, to string
		want     error
	}{
		{"allowed", acl.DMFriends, "alice", "bob", nil},
		{"allowed anyone", acl.DMAnyone, "alice", "carol", nil},
		{"not friends", acl.DMFriends, "alice", "carol", imqtt.ErrNotFriends},
		{"blocked", acl.DMFriends, "alice", "dave", imqtt.ErrNotAllowed},
		{"blocked reverse", acl.DMFriends, "erin", "alice", imqtt.ErrNotAllowed},
		{"oneself", acl.DMFriends, "alice", "alice", imqtt.ErrBadRequest},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			var err error
			n := testing.AllocsPerRun(1000, func() {
				err = acl.CanDM(gr, p.policy, p.from, p.to)
			})
			if !errors.Is(err, p.want) && !(p.want == nil && err == nil) {
				t.Fatalf("CanDM = %v; want %v (the path under test was not taken)", err, p.want)
			}
			if n != 0 {
				t.Errorf("CanDM allocates %v times per call; want 0", n)
			}
		})
	}
}

func BenchmarkCanDM(b *testing.B) {
	var g acl.Graph = world()
	for _, bc := range []struct {
		name     string
		from, to string
	}{
		{"allowed", "alice", "bob"},
		{"not_friends", "alice", "carol"},
		{"blocked", "alice", "dave"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = acl.CanDM(g, acl.DMFriends, bc.from, bc.to)
			}
		})
	}
}
