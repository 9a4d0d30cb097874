package chat

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

func init() {
	handlers["group.create"] = (*Service).groupCreate
	handlers["group.add"] = (*Service).groupAdd
	handlers["group.kick"] = (*Service).groupKick
	handlers["group.leave"] = (*Service).groupLeave
	handlers["group.info"] = (*Service).groupInfo
}

// groupField validates the "group" field of a request.
func groupField(r *imqtt.Request) (string, error) {
	if r.Group == "" {
		return "", imqtt.Errorf(imqtt.CodeBadRequest, "group is required")
	}
	if !imqtt.ValidID(r.Group) {
		return "", imqtt.Errorf(imqtt.CodeBadRequest, "group: invalid id %q: must be %s", truncate(r.Group, 40), imqtt.IDRule)
	}
	return r.Group, nil
}

// loadGroup returns group g or no_such_group.
func loadGroup(tx storage.Tx, g string) (storage.Group, error) {
	grp, ok, err := tx.Group(g)
	if err != nil {
		return grp, err
	}
	if !ok {
		return grp, imqtt.Errorf(imqtt.CodeNoSuchGroup, "no such group %s", g)
	}
	return grp, nil
}

// memberOf returns group g if user is a member: no_such_group, not_member.
func memberOf(tx storage.Tx, g, user string) (storage.Group, error) {
	grp, err := loadGroup(tx, g)
	if err != nil {
		return grp, err
	}
	if grp.IndexOf(user) < 0 {
		return grp, imqtt.Errorf(imqtt.CodeNotMember, "%s is not a member of group %s", user, g)
	}
	return grp, nil
}

// ownerOf returns group g if user owns it: no_such_group, not_member,
// not_owner.
func ownerOf(tx storage.Tx, g, user string) (storage.Group, error) {
	grp, err := memberOf(tx, g, user)
	if err != nil {
		return grp, err
	}
	if grp.Owner != user {
		return grp, imqtt.Errorf(imqtt.CodeNotOwner, "only the owner of group %s (%s) may do that", g, grp.Owner)
	}
	return grp, nil
}

// newcomers validates users to add to a group on behalf of adder: each must
// be a valid id, exist and be adder's friend. Duplicates, adder itself and
// those already members are dropped.
func newcomers(tx storage.Tx, adder string, users []string, grp *storage.Group) ([]string, error) {
	var out []string
	seen := map[string]bool{adder: true}
	for _, u := range users {
		if err := imqtt.ValidateID(u); err != nil {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "users: %s", imqtt.ErrorMessage(err))
		}
		if seen[u] || (grp != nil && grp.IndexOf(u) >= 0) {
			seen[u] = true
			continue
		}
		seen[u] = true
		if err := requireUser(tx, u); err != nil {
			return nil, err
		}
		friends, err := tx.AreFriends(adder, u)
		if err != nil {
			return nil, err
		}
		if !friends {
			return nil, imqtt.Errorf(imqtt.CodeNotFriends, "%s and %s are not friends", adder, u)
		}
		out = append(out, u)
	}
	return out, nil
}

// join adds users to grp at the group's current seq, with their conversation
// state, and tells each.
func join(tx storage.Tx, grp *storage.Group, users []string, by string, ts int64) error {
	conv := imqtt.GroupConv(grp.ID)
	last, err := tx.LastSeq(conv)
	if err != nil {
		return err
	}
	for _, u := range users {
		grp.Members = append(grp.Members, storage.Member{User: u, JoinSeq: last, TS: ts})
		// A member added later starts with everything read.
		if err := tx.PutConvState(u, storage.ConvState{Conv: conv, ReadSeq: last, JoinSeq: last, TS: ts}); err != nil {
			return err
		}
		if err := appendEvent(tx, u, imqtt.Event{Type: imqtt.EvGroupJoined, TS: ts, Group: grp.ID, By: by}); err != nil {
			return err
		}
	}
	return nil
}

func newGroupID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "g" + hex.EncodeToString(b[:])
}

func (s *Service) groupCreate(c Caller, r *imqtt.Request) (any, error) {
	id := r.Group
	if id != "" {
		if _, err := groupField(r); err != nil {
			return nil, err
		}
	}
	// An empty name is taken as an absent one: the group id, set below
	// once a generated id is known.
	var name string
	if r.Name != nil {
		if err := imqtt.CheckLen("name", *r.Name, 0, imqtt.MaxGroupNameLen); err != nil {
			return nil, err
		}
		name = *r.Name
	}
	ts := s.now()
	var gid string
	err := s.updateNotify(func(tx storage.Tx) ([]string, error) {
		gid = id
		if gid == "" {
			for {
				gid = newGroupID()
				if _, taken, err := tx.Group(gid); err != nil || !taken {
					if err != nil {
						return nil, err
					}
					break
				}
			}
		} else if _, taken, err := tx.Group(gid); err != nil || taken {
			if err == nil {
				err = imqtt.Errorf(imqtt.CodeBadRequest, "group %s already exists", gid)
			}
			return nil, err
		}
		users, err := newcomers(tx, c.User, r.Members, nil)
		if err != nil {
			return nil, err
		}
		if len(users)+1 > s.o.MaxGroupMembers {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "a group has at most %d members", s.o.MaxGroupMembers)
		}
		gname := name
		if gname == "" {
			gname = gid
		}
		grp := storage.Group{ID: gid, Name: gname, Owner: c.User, Created: ts}
		all := append([]string{c.User}, users...)
		if err := join(tx, &grp, all, c.User, ts); err != nil {
			return nil, err
		}
		return all, tx.PutGroup(grp)
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"group": gid}, nil
}

func (s *Service) groupAdd(c Caller, r *imqtt.Request) (any, error) {
	g, err := groupField(r)
	if err != nil {
		return nil, err
	}
	if len(r.Users) == 0 {
		return nil, imqtt.Errorf(imqtt.CodeBadRequest, "users is required (a non-empty array of user ids)")
	}
	ts := s.now()
	err = s.updateNotify(func(tx storage.Tx) ([]string, error) {
		grp, err := ownerOf(tx, g, c.User)
		if err != nil {
			return nil, err
		}
		users, err := newcomers(tx, c.User, r.Users, &grp)
		if err != nil || len(users) == 0 {
			return nil, err
		}
		if len(grp.Members)+len(users) > s.o.MaxGroupMembers {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "a group has at most %d members", s.o.MaxGroupMembers)
		}
		var notify []string
		for _, m := range grp.Members {
			for _, u := range users {
				if err := appendEvent(tx, m.User, imqtt.Event{Type: imqtt.EvGroupMemberAdded, TS: ts, Group: g, User: u}); err != nil {
					return nil, err
				}
			}
			notify = append(notify, m.User)
		}
		if err := join(tx, &grp, users, c.User, ts); err != nil {
			return nil, err
		}
		return append(notify, users...), tx.PutGroup(grp)
	})
	return nil, err
}

// depart removes user from grp (kicked by by, or leaving when by == user):
// the user gets group.left, the rest group.member_removed; an owner who
// leaves hands over to the earliest member; the last one out deletes the
// group. It returns who to notify.
func depart(tx storage.Tx, grp storage.Group, user, by string, ts int64) ([]string, error) {
	if err := tx.DeleteConvState(user, imqtt.GroupConv(grp.ID)); err != nil {
		return nil, err
	}
	i := grp.IndexOf(user)
	grp.Members = append(grp.Members[:i], grp.Members[i+1:]...)
	if err := appendEvent(tx, user, imqtt.Event{Type: imqtt.EvGroupLeft, TS: ts, Group: grp.ID, By: by}); err != nil {
		return nil, err
	}
	notify := []string{user}
	if len(grp.Members) == 0 {
		return notify, tx.DeleteGroup(grp.ID)
	}
	if grp.Owner == user {
		grp.Owner = grp.Members[0].User
	}
	for _, m := range grp.Members {
		if err := appendEvent(tx, m.User, imqtt.Event{Type: imqtt.EvGroupMemberRemoved, TS: ts, Group: grp.ID, User: user}); err != nil {
			return nil, err
		}
		notify = append(notify, m.User)
	}
	return notify, tx.PutGroup(grp)
}

func (s *Service) groupKick(c Caller, r *imqtt.Request) (any, error) {
	g, err := groupField(r)
	if err != nil {
		return nil, err
	}
	u, err := userField(r)
	if err != nil {
		return nil, err
	}
	ts := s.now()
	err = s.updateNotify(func(tx storage.Tx) ([]string, error) {
		grp, err := ownerOf(tx, g, c.User)
		if err != nil {
			return nil, err
		}
		if u == c.User {
			return nil, imqtt.Errorf(imqtt.CodeBadRequest, "the owner cannot kick itself; use group.leave")
		}
		if grp.IndexOf(u) < 0 {
			return nil, imqtt.Errorf(imqtt.CodeNotMember, "%s is not a member of group %s", u, g)
		}
		return depart(tx, grp, u, c.User, ts)
	})
	return nil, err
}

func (s *Service) groupLeave(c Caller, r *imqtt.Request) (any, error) {
	g, err := groupField(r)
	if err != nil {
		return nil, err
	}
	ts := s.now()
	err = s.updateNotify(func(tx storage.Tx) ([]string, error) {
		grp, err := memberOf(tx, g, c.User)
		if err != nil {
			return nil, err
		}
		return depart(tx, grp, c.User, c.User, ts)
	})
	return nil, err
}

type groupInfoJSON struct {
	Group   string   `json:"group"`
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
}

func (s *Service) groupInfo(c Caller, r *imqtt.Request) (any, error) {
	g, err := groupField(r)
	if err != nil {
		return nil, err
	}
	var out groupInfoJSON
	err = s.o.Store.View(func(tx storage.Tx) error {
		grp, err := memberOf(tx, g, c.User)
		if err != nil {
			return err
		}
		out = groupInfoJSON{Group: grp.ID, Name: grp.Name, Owner: grp.Owner, Members: make([]string, len(grp.Members))}
		for i, m := range grp.Members {
			out.Members[i] = m.User
		}
		return nil
	})
	return out, err
}
