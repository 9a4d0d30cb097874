package acl

import "github.com/imqtt/imqtt"

// Graph is the part of the relationship chain the decisions read. Both
// storage.Tx and test fakes satisfy it.
type Graph interface {
	AreFriends(a, b string) (bool, error)
	// Blocks reports whether a has blocked b.
	Blocks(a, b string) (bool, error)
}

// DMPolicy says who may DM whom.
type DMPolicy uint8

// DM policies of PROTOCOL.md section 8 (dm_policy).
const (
	DMFriends DMPolicy = iota // friends only (default)
	DMAnyone                  // anyone, blocks still hold
)

// ParseDMPolicy reads a dm_policy value.
func ParseDMPolicy(s string) (DMPolicy, bool) {
	switch s {
	case "", "friends":
		return DMFriends, true
	case "anyone":
		return DMAnyone, true
	}
	return 0, false
}

// Blocked reports whether a block stands between a and b, either way.
func Blocked(g Graph, a, b string) (bool, error) {
	if x, err := g.Blocks(a, b); err != nil || x {
		return x, err
	}
	return g.Blocks(b, a)
}

// CanDM decides whether from may send a DM to to (who must exist; the caller
// checks that). It returns nil, imqtt.ErrBadRequest (to oneself),
// imqtt.ErrNotAllowed (a block either way) or imqtt.ErrNotFriends. It does
// not allocate.
func CanDM(g Graph, p DMPolicy, from, to string) error {
	if from == to {
		return imqtt.ErrBadRequest
	}
	blocked, err := Blocked(g, from, to)
	if err != nil {
		return err
	}
	if blocked {
		return imqtt.ErrNotAllowed
	}
	if p == DMAnyone {
		return nil
	}
	friends, err := g.AreFriends(from, to)
	if err != nil {
		return err
	}
	if !friends {
		return imqtt.ErrNotFriends
	}
	return nil
}

// CanRequestFriend decides whether from may send to a friend request:
// nil, imqtt.ErrBadRequest (oneself) or imqtt.ErrNotAllowed (a block either
// way).
func CanRequestFriend(g Graph, from, to string) error {
	if from == to {
		return imqtt.ErrBadRequest
	}
	blocked, err := Blocked(g, from, to)
	if err != nil {
		return err
	}
	if blocked {
		return imqtt.ErrNotAllowed
	}
	return nil
}

// SeesPresence reports whether watcher may learn user's presence: friends
// with no block either way.
func SeesPresence(g Graph, watcher, user string) (bool, error) {
	friends, err := g.AreFriends(watcher, user)
	if err != nil || !friends {
		return false, err
	}
	blocked, err := Blocked(g, watcher, user)
	if err != nil {
		return false, err
	}
	return !blocked, nil
}
