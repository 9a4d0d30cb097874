package chat

import (
	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

// RemoveUser removes a user as PROTOCOL.md section 7 says: its friends get
// friend.removed, it leaves each of its groups as group.leave does (owner
// handover, deletion of an emptied group), and its bindings, tokens,
// relationships and backlog go, in one transaction. Disconnecting its
// devices is the caller's part.
func (s *Service) RemoveUser(user string) error {
	ts := s.now()
	return s.updateNotify(func(tx storage.Tx) ([]string, error) {
		var notify []string
		if err := requireUser(tx, user); err != nil {
			return nil, err
		}
		friends, err := tx.Friends(user)
		if err != nil {
			return nil, err
		}
		states, err := tx.ConvStates(user)
		if err != nil {
			return nil, err
		}
		for _, f := range friends {
			if err := tx.Unfriend(user, f); err != nil {
				return nil, err
			}
			if err := appendEvent(tx, f, imqtt.Event{Type: imqtt.EvFriendRemoved, TS: ts, User: user}); err != nil {
				return nil, err
			}
			notify = append(notify, f)
		}
		for _, st := range states {
			_, _, g, err := imqtt.ParseConv(string(st.Conv))
			if err != nil || g == "" {
				continue
			}
			grp, ok, err := tx.Group(g)
			if err != nil {
				return nil, err
			}
			if !ok || grp.IndexOf(user) < 0 {
				continue
			}
			n, err := depart(tx, grp, user, user, ts)
			if err != nil {
				return nil, err
			}
			notify = append(notify, n...)
		}
		return notify, tx.DeleteUser(user)
	})
}

// Offline is a Notifier for tools that work on a store no broker serves:
// there is nobody online to tell, and stored events wait in the streams.
var Offline Notifier = offline{}

type offline struct{}

func (offline) Appended(...string)       {}
func (offline) Transient(string, []byte) {}
func (offline) Online(string) bool       { return false }
