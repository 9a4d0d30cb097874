package chat

import (
	"encoding/json"
	"sort"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/storage"
)

func init() {
	handlers["history"] = (*Service).history
	handlers["read"] = (*Service).read
	handlers["conv.list"] = (*Service).convList
	handlers["typing"] = (*Service).typing
	handlers["presence"] = (*Service).presence
}

// convMembers checks that user is in conv and returns its members and the
// seq after which user may read: group members added later see only what
// follows their joining, and so does, in a DM, a user whose id was removed
// and created again (see send).
func convMembers(tx storage.Tx, conv, user string) (id imqtt.ConvID, members []string, floor uint64, err error) {
	a, b, g, err := imqtt.ParseConv(conv)
	if err != nil {
		return "", nil, 0, err
	}
	if g == "" {
		if user != a && user != b {
			return "", nil, 0, imqtt.Errorf(imqtt.CodeNotMember, "%s is not in conversation %s", user, conv)
		}
		id = imqtt.ConvID(conv)
		st, ok, err := tx.ConvState(user, id)
		if err != nil {
			return "", nil, 0, err
		}
		floor = st.JoinSeq
		if !ok {
			// Both users of a DM get their state with its first
			// message; without one, user's id was created again since
			// and sees none of the earlier messages.
			if floor, err = tx.LastSeq(id); err != nil {
				return "", nil, 0, err
			}
		}
		return id, []string{a, b}, floor, nil
	}
	grp, err := memberOf(tx, g, user)
	if err != nil {
		return "", nil, 0, err
	}
	members = make([]string, len(grp.Members))
	for i, m := range grp.Members {
		members[i] = m.User
		if m.User == user {
			floor = m.JoinSeq
		}
	}
	return imqtt.ConvID(conv), members, floor, nil
}

func convField(r *imqtt.Request) (string, error) {
	if r.Conv == "" {
		return "", imqtt.Errorf(imqtt.CodeBadRequest, "conv is required")
	}
	return r.Conv, nil
}

func (s *Service) history(c Caller, r *imqtt.Request) (any, error) {
	conv, err := convField(r)
	if err != nil {
		return nil, err
	}
	if r.Before != nil && r.After != nil {
		return nil, imqtt.Errorf(imqtt.CodeBadRequest, "give before or after, not both")
	}
	limit := int64(imqtt.DefaultHistoryLimit)
	if r.Limit != nil {
		limit = *r.Limit
		if limit < 1 || limit > imqtt.MaxHistoryLimit {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "limit: must be 1-%d", imqtt.MaxHistoryLimit)
		}
	}
	var before, after uint64
	if r.Before != nil {
		if *r.Before < 0 {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "before: must not be negative")
		}
		before = uint64(*r.Before)
	}
	if r.After != nil {
		if *r.After < 0 {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "after: must not be negative")
		}
		after = uint64(*r.After)
	}
	q := storage.HistoryQuery{Before: before, After: after, HasAfter: r.After != nil, Limit: int(limit)}
	var msgs [][]byte
	err = s.o.Store.View(func(tx storage.Tx) error {
		id, _, floor, err := convMembers(tx, conv, c.User)
		if err != nil {
			return err
		}
		if r.Before != nil && before == 0 {
			// Nothing comes before seq 0; the store reads Before 0 as
			// "no bound" and would return the latest page.
			return nil
		}
		msgs, err = tx.History(id, floor, q)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := struct {
		Messages []json.RawMessage `json:"messages"`
	}{Messages: make([]json.RawMessage, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = m
	}
	return out, nil
}

func (s *Service) read(c Caller, r *imqtt.Request) (any, error) {
	conv, err := convField(r)
	if err != nil {
		return nil, err
	}
	if r.Seq == nil {
		return nil, imqtt.Errorf(imqtt.CodeBadRequest, "seq is required")
	}
	if *r.Seq < 0 {
		return nil, imqtt.Errorf(imqtt.CodeBadRequest, "seq: must not be negative")
	}
	seq := uint64(*r.Seq)
	ts := s.now()
	var notify []string
	var readSeq uint64
	err = s.o.Store.Update(func(tx storage.Tx) error {
		notify = nil
		id, members, floor, err := convMembers(tx, conv, c.User)
		if err != nil {
			return err
		}
		last, err := tx.LastSeq(id)
		if err != nil {
			return err
		}
		if seq > last {
			return imqtt.Errorf(imqtt.CodeBadRequest, "seq %d is past the last seq %d of %s", seq, last, conv)
		}
		st, ok, err := tx.ConvState(c.User, id)
		if err != nil {
			return err
		}
		if !ok {
			// Read marks start where the user may read from: a mark
			// below it would count messages it cannot see as unread.
			st = storage.ConvState{Conv: id, ReadSeq: floor, JoinSeq: floor, TS: ts}
		}
		readSeq = st.ReadSeq
		if seq <= st.ReadSeq {
			return nil
		}
		st.ReadSeq, readSeq = seq, seq
		if err := tx.PutConvState(c.User, st); err != nil {
			return err
		}
		ev := imqtt.Event{Type: imqtt.EvRead, TS: ts, Conv: conv, User: c.User, Seq: seq}
		for _, m := range members {
			if err := appendEvent(tx, m, ev); err != nil {
				return err
			}
		}
		notify = members
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.o.Notifier.Appended(notify...)
	return map[string]uint64{"read_seq": readSeq}, nil
}

type convJSON struct {
	Conv    imqtt.ConvID    `json:"conv"`
	LastSeq uint64          `json:"last_seq"`
	ReadSeq uint64          `json:"read_seq"`
	Unread  uint64          `json:"unread"`
	Last    json.RawMessage `json:"last,omitempty"`
	active  int64
}

func (s *Service) convList(c Caller, _ *imqtt.Request) (any, error) {
	var convs []convJSON
	err := s.o.Store.View(func(tx storage.Tx) error {
		states, err := tx.ConvStates(c.User)
		if err != nil {
			return err
		}
		convs = make([]convJSON, 0, len(states))
		for _, st := range states {
			last, err := tx.LastSeq(st.Conv)
			if err != nil {
				return err
			}
			cj := convJSON{Conv: st.Conv, LastSeq: last, ReadSeq: st.ReadSeq, active: st.TS}
			if last > st.ReadSeq {
				cj.Unread = last - st.ReadSeq
			}
			if last > st.JoinSeq {
				m, ok, err := tx.LastMessage(st.Conv)
				if err != nil {
					return err
				}
				if ok {
					cj.Last = m
					var ts struct {
						TS int64 `json:"ts"`
					}
					if json.Unmarshal(m, &ts) == nil && ts.TS > cj.active {
						cj.active = ts.TS
					}
				}
			}
			convs = append(convs, cj)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(convs, func(i, j int) bool {
		if convs[i].active != convs[j].active {
			return convs[i].active > convs[j].active
		}
		return convs[i].Conv < convs[j].Conv
	})
	return struct {
		Convs []convJSON `json:"convs"`
	}{convs}, nil
}

func (s *Service) typing(c Caller, r *imqtt.Request) (any, error) {
	conv, err := convField(r)
	if err != nil {
		return nil, err
	}
	var to []string
	err = s.o.Store.View(func(tx storage.Tx) error {
		_, members, _, err := convMembers(tx, conv, c.User)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m == c.User {
				continue
			}
			blocked, err := acl.Blocked(tx, c.User, m)
			if err != nil {
				return err
			}
			if !blocked {
				to = append(to, m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ev := imqtt.Event{Type: imqtt.EvTyping, TS: s.now(), Conv: conv, User: c.User}.Encode()
	for _, u := range to {
		s.o.Notifier.Transient(u, ev)
	}
	return nil, nil
}

func (s *Service) presence(c Caller, r *imqtt.Request) (any, error) {
	for _, u := range r.Users {
		if err := imqtt.ValidateID(u); err != nil {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "users: %s", imqtt.ErrorMessage(err))
		}
	}
	online := []string{}
	err := s.o.Store.View(func(tx storage.Tx) error {
		users := r.Users
		if users == nil {
			fs, err := tx.Friends(c.User)
			if err != nil {
				return err
			}
			users = fs
		}
		seen := map[string]bool{}
		for _, u := range users {
			if seen[u] {
				continue
			}
			seen[u] = true
			ok, err := acl.SeesPresence(tx, c.User, u)
			if err != nil {
				return err
			}
			if ok && s.o.Notifier.Online(u) {
				online = append(online, u)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string][]string{"online": online}, nil
}

// PresenceChanged tells user's friends (not blocked either way) that its
// first device came online or its last went away.
func (s *Service) PresenceChanged(user string, online bool) error {
	var to []string
	err := s.o.Store.View(func(tx storage.Tx) error {
		fs, err := tx.Friends(user)
		if err != nil {
			return err
		}
		for _, f := range fs {
			ok, err := acl.SeesPresence(tx, f, user)
			if err != nil {
				return err
			}
			if ok {
				to = append(to, f)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	ev := imqtt.Event{Type: imqtt.EvPresence, TS: s.now(), User: user, Online: &online}.Encode()
	for _, f := range to {
		s.o.Notifier.Transient(f, ev)
	}
	return nil
}
