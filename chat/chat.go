package chat

import (
	"errors"
	"fmt"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/storage"
)

// Store is what the service needs of the store.
type Store interface {
	storage.Transactor
}

// Notifier learns whose delivery streams grew, and carries transient events
// (presence, typing) that are never stored.
type Notifier interface {
	// Appended is called after a commit that appended to users' streams.
	Appended(users ...string)
	// Transient sends an unstored event to user's online devices.
	Transient(user string, payload []byte)
	// Online reports whether user has a device online.
	Online(user string) bool
}

// Options configure a Service.
type Options struct {
	Store      Store
	Notifier   Notifier
	DMPolicy   acl.DMPolicy
	MaxPayload int
	// MaxGroupMembers caps a group's size (0: 500).
	MaxGroupMembers int
	// Now returns the time; nil means time.Now.
	Now func() time.Time
}

// Service carries out requests and accepts messages.
type Service struct {
	o Options
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxGroupMembers <= 0 {
		o.MaxGroupMembers = 500
	}
	return &Service{o: o}
}

func (s *Service) now() int64 { return s.o.Now().UnixMilli() }

// updateNotify runs fn in a write transaction and, once it is durable, tells
// the Notifier whose streams fn appended to. fn returns that list instead of
// appending to an outer one because a group commit may run it again.
func (s *Service) updateNotify(fn func(tx storage.Tx) ([]string, error)) error {
	var notify []string
	err := s.o.Store.Update(func(tx storage.Tx) error {
		var err error
		notify, err = fn(tx)
		return err
	})
	if err != nil {
		return err
	}
	s.o.Notifier.Appended(notify...)
	return nil
}

// internal wraps a store failure so clients see only "internal".
func internal(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *imqtt.Error
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("%s: %w: %w", op, imqtt.ErrInternal, err)
}

// requireUser returns no_such_user unless id exists.
func requireUser(tx storage.Tx, id string) error {
	ok, err := tx.UserExists(id)
	if err != nil {
		return err
	}
	if !ok {
		return imqtt.Errorf(imqtt.CodeNoSuchUser, "no such user %s", id)
	}
	return nil
}

// appendEvent stores ev in user's stream.
func appendEvent(tx storage.Tx, user string, ev imqtt.Event) error {
	_, err := tx.AppendEvent(user, ev.TS, ev.Encode())
	return err
}

// Result is the outcome of an accepted message.
type Result struct {
	Conv imqtt.ConvID
	Seq  uint64
	ID   string
	// Duplicate is set when the message was an idempotent retry of one
	// already stored.
	Duplicate bool
}

// SendDM accepts a message from me to the DM with peer. On error, the
// returned Result holds the message's id if it had a valid one (to echo it).
func (s *Service) SendDM(me, peer string, payload []byte) (Result, error) {
	if me == peer {
		in, _ := imqtt.DecodeMessage(payload, s.o.MaxPayload)
		return Result{ID: in.ID}, imqtt.Errorf(imqtt.CodeBadRequest, "a DM to oneself is not allowed")
	}
	conv := imqtt.DMConv(me, peer)
	return s.send(me, conv, payload, func(tx storage.Tx) ([]string, error) {
		if err := requireUser(tx, peer); err != nil {
			return nil, err
		}
		switch err := acl.CanDM(tx, s.o.DMPolicy, me, peer); {
		case errors.Is(err, imqtt.ErrNotFriends):
			return nil, imqtt.Errorf(imqtt.CodeNotFriends, "%s and %s are not friends", me, peer)
		case errors.Is(err, imqtt.ErrNotAllowed):
			return nil, imqtt.Errorf(imqtt.CodeNotAllowed, "a block stands between %s and %s", me, peer)
		case err != nil:
			return nil, err
		}
		return []string{me, peer}, nil
	})
}

// SendGroup accepts a message from me to group g.
func (s *Service) SendGroup(me, g string, payload []byte) (Result, error) {
	return s.send(me, imqtt.GroupConv(g), payload, func(tx storage.Tx) ([]string, error) {
		grp, err := memberOf(tx, g, me)
		if err != nil {
			return nil, err
		}
		users := make([]string, len(grp.Members))
		for i, m := range grp.Members {
			users[i] = m.User
		}
		return users, nil
	})
}

// send stores a message once and a reference to it in every member's
// stream. members checks the sender's right to send and returns the members.
func (s *Service) send(me string, conv imqtt.ConvID, payload []byte, members func(storage.Tx) ([]string, error)) (Result, error) {
	in, err := imqtt.DecodeMessage(payload, s.o.MaxPayload)
	if err != nil {
		return Result{ID: in.ID}, err
	}
	id := in.ID
	if id == "" {
		id = imqtt.NewMessageID()
	}
	m := imqtt.Message{Conv: conv, ID: id, From: me, Type: in.Type, Body: in.Body}
	var res Result
	var notify []string
	err = s.o.Store.Update(func(tx storage.Tx) error {
		res, notify = Result{Conv: conv, ID: id}, nil
		// Stamped inside the commit, which runs functions one after
		// another: later seqs never carry earlier times.
		m.TS = s.now()
		// A resend of a stored message is acknowledged with its seq
		// before the rules are checked: the sender may have lost the
		// right to send since (unfriended, blocked, left the group), and
		// refusing the retry would report a stored message as refused.
		if in.ID != "" {
			seq, _, ok, err := tx.MessageByID(conv, me, in.ID)
			if err != nil {
				return err
			}
			if ok {
				res.Seq, res.Duplicate = seq, true
				return nil
			}
		}
		users, err := members(tx)
		if err != nil {
			return err
		}
		seq, err := tx.AppendMessage(conv, me, in.ID, m.TS, func(seq uint64) []byte {
			mm := m
			mm.Seq = seq
			return mm.Encode()
		})
		if err != nil {
			return err
		}
		res.Seq = seq
		for _, u := range users {
			if _, err := tx.AppendMessageRef(u, m.TS, conv, seq); err != nil {
				return err
			}
			st, ok, err := tx.ConvState(u, conv)
			if err != nil {
				return err
			}
			if !ok {
				// A DM's first message gives both users their state, so
				// a DM with earlier messages and no state for u means u's
				// id was removed and created again: like a group member
				// added later, u starts after what was there before.
				st = storage.ConvState{Conv: conv, ReadSeq: seq - 1, JoinSeq: seq - 1, TS: m.TS}
			} else if u != me {
				continue
			}
			if u == me {
				// One's own messages are never unread.
				st.ReadSeq = seq
			}
			if err := tx.PutConvState(u, st); err != nil {
				return err
			}
		}
		notify = users
		return nil
	})
	if err != nil {
		return Result{ID: in.ID}, internal("send", err)
	}
	if !res.Duplicate {
		s.o.Notifier.Appended(notify...)
	}
	return res, nil
}
