package chat

import (
	"errors"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/storage"
)

// Caller is who made a request.
type Caller struct {
	User     string
	ClientID string
}

type handler func(s *Service, c Caller, r *imqtt.Request) (any, error)

// handlers maps ops to their handlers; each file registers its own.
var handlers = map[string]handler{}

func init() {
	handlers["friend.request"] = (*Service).friendRequest
	handlers["friend.accept"] = (*Service).friendAccept
	handlers["friend.reject"] = (*Service).friendReject
	handlers["friend.remove"] = (*Service).friendRemove
	handlers["friend.list"] = (*Service).friendList
	handlers["block.add"] = (*Service).blockAdd
	handlers["block.remove"] = (*Service).blockRemove
	handlers["block.list"] = (*Service).blockList
}

// Request carries out a request payload published to im/req and returns
// the response payload for im/u/{me}/res, with the op ("" if unknown) and
// the error code ("" on success) for logs and statistics.
func (s *Service) Request(c Caller, payload []byte) (resp []byte, op string, code imqtt.Code) {
	r, err := imqtt.DecodeRequest(payload)
	if err != nil {
		return imqtt.ErrResponse(r.Rid, "", err), "", imqtt.ErrorCode(err)
	}
	h, ok := handlers[r.Op]
	if !ok {
		err := imqtt.Errorf(imqtt.CodeBadRequest, "unknown op %q", truncate(r.Op, 64))
		return imqtt.ErrResponse(r.Rid, "", err), "", imqtt.CodeBadRequest
	}
	data, err := h(s, c, &r)
	if err != nil {
		err = internal(r.Op, err)
		return imqtt.ErrResponse(r.Rid, "", err), r.Op, imqtt.ErrorCode(err)
	}
	return imqtt.OKResponse(r.Rid, data), r.Op, ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// userField validates the "user" field of a request.
func userField(r *imqtt.Request) (string, error) {
	if r.User == "" {
		return "", imqtt.Errorf(imqtt.CodeBadRequest, "user is required")
	}
	if err := imqtt.ValidateID(r.User); err != nil {
		return "", imqtt.Errorf(imqtt.CodeBadRequest, "user: %s", imqtt.ErrorMessage(err))
	}
	return r.User, nil
}

func (s *Service) friendRequest(c Caller, r *imqtt.Request) (any, error) {
	to, err := userField(r)
	if err != nil {
		return nil, err
	}
	var note string
	if r.Note != nil {
		if err := imqtt.CheckLen("note", *r.Note, 0, imqtt.MaxNoteLen); err != nil {
			return nil, err
		}
		note = *r.Note
	}
	if to == c.User {
		return nil, imqtt.Errorf(imqtt.CodeBadRequest, "cannot send a friend request to oneself")
	}
	ts := s.now()
	err = s.updateNotify(func(tx storage.Tx) ([]string, error) {
		if err := requireUser(tx, to); err != nil {
			return nil, err
		}
		if err := acl.CanRequestFriend(tx, c.User, to); errors.Is(err, imqtt.ErrNotAllowed) {
			return nil, imqtt.Errorf(imqtt.CodeNotAllowed, "a block stands between %s and %s", c.User, to)
		} else if err != nil {
			return nil, err
		}
		if friends, err := tx.AreFriends(c.User, to); err != nil || friends {
			return nil, err
		}
		if _, pending, err := tx.FriendRequest(c.User, to); err != nil || pending {
			return nil, err
		}
		_, reverse, err := tx.FriendRequest(to, c.User)
		if err != nil {
			return nil, err
		}
		if reverse {
			// Both asked: they are friends at once.
			return []string{c.User, to}, befriend(tx, c.User, to, ts)
		}
		if err := tx.PutFriendRequest(storage.FriendRequest{From: c.User, To: to, Note: note, TS: ts}); err != nil {
			return nil, err
		}
		return []string{to}, appendEvent(tx, to, imqtt.Event{Type: imqtt.EvFriendRequest, TS: ts, From: c.User, Note: note})
	})
	return nil, err
}

// befriend turns a pending request (either way) into a friendship and tells
// both.
func befriend(tx storage.Tx, a, b string, ts int64) error {
	if err := tx.DeleteFriendRequest(a, b); err != nil {
		return err
	}
	if err := tx.DeleteFriendRequest(b, a); err != nil {
		return err
	}
	if err := tx.SetFriends(a, b, ts); err != nil {
		return err
	}
	if err := appendEvent(tx, a, imqtt.Event{Type: imqtt.EvFriendAdded, TS: ts, User: b}); err != nil {
		return err
	}
	return appendEvent(tx, b, imqtt.Event{Type: imqtt.EvFriendAdded, TS: ts, User: a})
}

func (s *Service) friendAccept(c Caller, r *imqtt.Request) (any, error) {
	from, err := userField(r)
	if err != nil {
		return nil, err
	}
	ts := s.now()
	err = s.o.Store.Update(func(tx storage.Tx) error {
		_, pending, err := tx.FriendRequest(from, c.User)
		if err != nil {
			return err
		}
		if !pending {
			return imqtt.Errorf(imqtt.CodeBadRequest, "no pending friend request from %s", from)
		}
		return befriend(tx, from, c.User, ts)
	})
	if err != nil {
		return nil, err
	}
	s.o.Notifier.Appended(from, c.User)
	return nil, nil
}

func (s *Service) friendReject(c Caller, r *imqtt.Request) (any, error) {
	from, err := userField(r)
	if err != nil {
		return nil, err
	}
	return nil, s.o.Store.Update(func(tx storage.Tx) error {
		_, pending, err := tx.FriendRequest(from, c.User)
		if err != nil {
			return err
		}
		if !pending {
			return imqtt.Errorf(imqtt.CodeBadRequest, "no pending friend request from %s", from)
		}
		// The requester is not told.
		return tx.DeleteFriendRequest(from, c.User)
	})
}

func (s *Service) friendRemove(c Caller, r *imqtt.Request) (any, error) {
	other, err := userField(r)
	if err != nil {
		return nil, err
	}
	ts := s.now()
	err = s.o.Store.Update(func(tx storage.Tx) error {
		friends, err := tx.AreFriends(c.User, other)
		if err != nil {
			return err
		}
		if !friends {
			return imqtt.Errorf(imqtt.CodeNotFriends, "%s and %s are not friends", c.User, other)
		}
		return unfriend(tx, c.User, other, ts)
	})
	if err != nil {
		return nil, err
	}
	s.o.Notifier.Appended(c.User, other)
	return nil, nil
}

// unfriend ends a friendship and tells both.
func unfriend(tx storage.Tx, a, b string, ts int64) error {
	if err := tx.Unfriend(a, b); err != nil {
		return err
	}
	if err := appendEvent(tx, a, imqtt.Event{Type: imqtt.EvFriendRemoved, TS: ts, User: b}); err != nil {
		return err
	}
	return appendEvent(tx, b, imqtt.Event{Type: imqtt.EvFriendRemoved, TS: ts, User: a})
}

type requestJSON struct {
	User string `json:"user"`
	Note string `json:"note,omitempty"`
	TS   int64  `json:"ts"`
}

type friendListJSON struct {
	Friends  []string      `json:"friends"`
	Incoming []requestJSON `json:"incoming"`
	Outgoing []requestJSON `json:"outgoing"`
}

func (s *Service) friendList(c Caller, _ *imqtt.Request) (any, error) {
	out := friendListJSON{Friends: []string{}, Incoming: []requestJSON{}, Outgoing: []requestJSON{}}
	err := s.o.Store.View(func(tx storage.Tx) error {
		fs, err := tx.Friends(c.User)
		if err != nil {
			return err
		}
		in, outg, err := tx.FriendRequests(c.User)
		if err != nil {
			return err
		}
		out.Friends = append(out.Friends, fs...)
		for _, r := range in {
			out.Incoming = append(out.Incoming, requestJSON{User: r.From, Note: r.Note, TS: r.TS})
		}
		for _, r := range outg {
			out.Outgoing = append(out.Outgoing, requestJSON{User: r.To, Note: r.Note, TS: r.TS})
		}
		return nil
	})
	return out, err
}

func (s *Service) blockAdd(c Caller, r *imqtt.Request) (any, error) {
	other, err := userField(r)
	if err != nil {
		return nil, err
	}
	if other == c.User {
		return nil, imqtt.Errorf(imqtt.CodeBadRequest, "cannot block oneself")
	}
	ts := s.now()
	return nil, s.o.Store.Update(func(tx storage.Tx) error {
		if err := requireUser(tx, other); err != nil {
			return err
		}
		if on, err := tx.Blocks(c.User, other); err != nil || on {
			return err
		}
		// The blocked user is not told.
		return tx.SetBlock(c.User, other, ts, true)
	})
}

func (s *Service) blockRemove(c Caller, r *imqtt.Request) (any, error) {
	other, err := userField(r)
	if err != nil {
		return nil, err
	}
	return nil, s.o.Store.Update(func(tx storage.Tx) error {
		if on, err := tx.Blocks(c.User, other); err != nil || !on {
			return err
		}
		return tx.SetBlock(c.User, other, 0, false)
	})
}

func (s *Service) blockList(c Caller, _ *imqtt.Request) (any, error) {
	out := struct {
		Blocked []string `json:"blocked"`
	}{Blocked: []string{}}
	err := s.o.Store.View(func(tx storage.Tx) error {
		b, err := tx.Blocked(c.User)
		out.Blocked = append(out.Blocked, b...)
		return err
	})
	return out, err
}
