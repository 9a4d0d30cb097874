package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	bbolt "go.etcd.io/bbolt"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
)

var (
	bucketFriends = []byte("friends") // a \x00 b -> ts (both directions)
	bucketReqIn   = []byte("req_in")  // to \x00 from -> requestRec
	bucketReqOut  = []byte("req_out") // from \x00 to -> requestRec
	bucketBlocks  = []byte("blocks")  // a \x00 b -> ts: a blocked b
	bucketStreams = []byte("streams") // user -> bucket: pos -> entry
	bucketMsgs    = []byte("msgs")    // conv -> bucket: seq -> message JSON
	bucketMsgIDs  = []byte("msg_ids") // conv \x00 sender \x00 id -> seq
	bucketCursors = []byte("cursors") // clientID -> pos
)

func init() {
	allBuckets = append(allBuckets, bucketFriends, bucketReqIn, bucketReqOut, bucketBlocks,
		bucketStreams, bucketMsgs, bucketMsgIDs, bucketCursors)
}

// errReadOnly is returned by writes in a View.
var errReadOnly = errors.New("write in a read-only transaction")

// tx implements storage.Tx over a bbolt transaction.
type tx struct {
	tx       *bbolt.Tx
	writable bool
	// dirty is set by the first write, so the committer knows whether a
	// failing function left changes that need a rollback.
	dirty bool
}

var _ storage.Tx = (*tx)(nil)

func (t *tx) write() error {
	if !t.writable {
		return errReadOnly
	}
	t.dirty = true
	return nil
}

func (t *tx) UserExists(id string) (bool, error) {
	return t.tx.Bucket(bucketUsers).Get([]byte(id)) != nil, nil
}

func (t *tx) AreFriends(a, b string) (bool, error) {
	return t.tx.Bucket(bucketFriends).Get(pairKey(a, b)) != nil, nil
}

func (t *tx) SetFriends(a, b string, ts int64) error {
	if err := t.write(); err != nil {
		return err
	}
	f := t.tx.Bucket(bucketFriends)
	if err := f.Put(pairKey(a, b), u64(uint64(ts))); err != nil {
		return err
	}
	return f.Put(pairKey(b, a), u64(uint64(ts)))
}

func (t *tx) Unfriend(a, b string) error {
	if err := t.write(); err != nil {
		return err
	}
	f := t.tx.Bucket(bucketFriends)
	if err := f.Delete(pairKey(a, b)); err != nil {
		return err
	}
	return f.Delete(pairKey(b, a))
}

// seconds lists the second half of every key "user \x00 x" in bucket b.
func seconds(b *bbolt.Bucket, user string) []string {
	prefix := pairKey(user, "")
	var out []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

func (t *tx) Friends(user string) ([]string, error) {
	return seconds(t.tx.Bucket(bucketFriends), user), nil
}

type requestRec struct {
	Note string `json:"note,omitempty"`
	TS   int64  `json:"ts"`
}

func (t *tx) FriendRequest(from, to string) (storage.FriendRequest, bool, error) {
	v := t.tx.Bucket(bucketReqOut).Get(pairKey(from, to))
	if v == nil {
		return storage.FriendRequest{}, false, nil
	}
	var r requestRec
	if err := json.Unmarshal(v, &r); err != nil {
		return storage.FriendRequest{}, false, fmt.Errorf("%w: friend request: %v", imqtt.ErrStoreCorrupt, err)
	}
	return storage.FriendRequest{From: from, To: to, Note: r.Note, TS: r.TS}, true, nil
}

func (t *tx) PutFriendRequest(r storage.FriendRequest) error {
	if err := t.write(); err != nil {
		return err
	}
	v, _ := json.Marshal(requestRec{Note: r.Note, TS: r.TS})
	if err := t.tx.Bucket(bucketReqOut).Put(pairKey(r.From, r.To), v); err != nil {
		return err
	}
	return t.tx.Bucket(bucketReqIn).Put(pairKey(r.To, r.From), v)
}

func (t *tx) DeleteFriendRequest(from, to string) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketReqOut).Delete(pairKey(from, to)); err != nil {
		return err
	}
	return t.tx.Bucket(bucketReqIn).Delete(pairKey(to, from))
}

func requests(b *bbolt.Bucket, user string, incoming bool) ([]storage.FriendRequest, error) {
	prefix := pairKey(user, "")
	var out []storage.FriendRequest
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
		var r requestRec
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("%w: friend request: %v", imqtt.ErrStoreCorrupt, err)
		}
		other := string(k[len(prefix):])
		fr := storage.FriendRequest{From: user, To: other, Note: r.Note, TS: r.TS}
		if incoming {
			fr.From, fr.To = other, user
		}
		out = append(out, fr)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].TS < out[j].TS })
	return out, nil
}

func (t *tx) FriendRequests(user string) (incoming, outgoing []storage.FriendRequest, err error) {
	if incoming, err = requests(t.tx.Bucket(bucketReqIn), user, true); err != nil {
		return nil, nil, err
	}
	if outgoing, err = requests(t.tx.Bucket(bucketReqOut), user, false); err != nil {
		return nil, nil, err
	}
	return incoming, outgoing, nil
}

func (t *tx) Blocks(a, b string) (bool, error) {
	return t.tx.Bucket(bucketBlocks).Get(pairKey(a, b)) != nil, nil
}

func (t *tx) SetBlock(a, b string, ts int64, on bool) error {
	if err := t.write(); err != nil {
		return err
	}
	if on {
		return t.tx.Bucket(bucketBlocks).Put(pairKey(a, b), u64(uint64(ts)))
	}
	return t.tx.Bucket(bucketBlocks).Delete(pairKey(a, b))
}

func (t *tx) Blocked(user string) ([]string, error) {
	return seconds(t.tx.Bucket(bucketBlocks), user), nil
}

// Stream entry values: kind byte, ts (8), then for an event its JSON, for a
// message seq (8) and the conversation id.
const (
	entryEvent   = 'e'
	entryMessage = 'm'
)

func (t *tx) stream(user string) (*bbolt.Bucket, error) {
	return t.tx.Bucket(bucketStreams).CreateBucketIfNotExists([]byte(user))
}

// appendEntry appends an entry value to user's stream.
func (t *tx) appendEntry(user string, v []byte) (uint64, error) {
	if err := t.write(); err != nil {
		return 0, err
	}
	s, err := t.stream(user)
	if err != nil {
		return 0, err
	}
	pos, err := s.NextSequence()
	if err != nil {
		return 0, err
	}
	return pos, s.Put(u64(pos), v)
}

func (t *tx) AppendEvent(user string, ts int64, payload []byte) (uint64, error) {
	v := make([]byte, 0, 9+len(payload))
	v = append(v, entryEvent)
	v = binary.BigEndian.AppendUint64(v, uint64(ts))
	return t.appendEntry(user, append(v, payload...))
}

func (t *tx) AppendMessageRef(user string, ts int64, conv imqtt.ConvID, seq uint64) (uint64, error) {
	v := make([]byte, 0, 17+len(conv))
	v = append(v, entryMessage)
	v = binary.BigEndian.AppendUint64(v, uint64(ts))
	v = binary.BigEndian.AppendUint64(v, seq)
	return t.appendEntry(user, append(v, conv...))
}

// msgIDSender returns the sender part of a msg_ids key, nil if it has none.
func msgIDSender(k []byte) []byte {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return nil
	}
	rest := k[i+1:]
	j := bytes.IndexByte(rest, 0)
	if j < 0 {
		return nil
	}
	return rest[:j]
}

func msgIDKey(conv imqtt.ConvID, sender, id string) []byte {
	k := make([]byte, 0, len(conv)+len(sender)+len(id)+2)
	k = append(k, conv...)
	k = append(k, 0)
	k = append(k, sender...)
	k = append(k, 0)
	return append(k, id...)
}

func (t *tx) AppendMessage(conv imqtt.ConvID, sender, id string, ts int64, build func(seq uint64) []byte) (uint64, error) {
	if err := t.write(); err != nil {
		return 0, err
	}
	b, err := t.tx.Bucket(bucketMsgs).CreateBucketIfNotExists([]byte(conv))
	if err != nil {
		return 0, err
	}
	// Sequential keys fill pages completely instead of splitting them in half.
	b.FillPercent = 0.95
	seq, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	// Stored: the acceptance time (8 bytes), then the message JSON.
	p := build(seq)
	v := make([]byte, 8, 8+len(p))
	binary.BigEndian.PutUint64(v, uint64(ts))
	if err := b.Put(u64(seq), append(v, p...)); err != nil {
		return 0, err
	}
	if id != "" {
		if err := t.tx.Bucket(bucketMsgIDs).Put(msgIDKey(conv, sender, id), u64(seq)); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

func (t *tx) MessageByID(conv imqtt.ConvID, sender, id string) (uint64, []byte, bool, error) {
	v := t.tx.Bucket(bucketMsgIDs).Get(msgIDKey(conv, sender, id))
	if len(v) != 8 {
		return 0, nil, false, nil
	}
	seq := binary.BigEndian.Uint64(v)
	p, err := t.message(conv, seq)
	if err != nil {
		return 0, nil, false, err
	}
	return seq, p, true, nil
}

// message returns a copy of the stored message (conv, seq).
func (t *tx) message(conv imqtt.ConvID, seq uint64) ([]byte, error) {
	b := t.tx.Bucket(bucketMsgs).Bucket([]byte(conv))
	if b == nil {
		return nil, fmt.Errorf("%w: message %s/%d missing", imqtt.ErrStoreCorrupt, conv, seq)
	}
	v := b.Get(u64(seq))
	if len(v) < 8 {
		return nil, fmt.Errorf("%w: message %s/%d missing", imqtt.ErrStoreCorrupt, conv, seq)
	}
	return append([]byte(nil), v[8:]...), nil
}

// msgJSON returns a copy of a stored message value's JSON.
func msgJSON(v []byte) []byte {
	if len(v) < 8 {
		return nil
	}
	return append([]byte(nil), v[8:]...)
}

// decodeEntry decodes a stream entry, resolving message payloads.
func (t *tx) decodeEntry(pos uint64, v []byte) (storage.Entry, error) {
	if len(v) < 9 {
		return storage.Entry{}, fmt.Errorf("%w: stream entry %d too short", imqtt.ErrStoreCorrupt, pos)
	}
	e := storage.Entry{Pos: pos, TS: int64(binary.BigEndian.Uint64(v[1:9]))}
	switch v[0] {
	case entryEvent:
		e.Payload = append([]byte(nil), v[9:]...)
		return e, nil
	case entryMessage:
		if len(v) < 18 {
			return e, fmt.Errorf("%w: stream entry %d too short", imqtt.ErrStoreCorrupt, pos)
		}
		e.Seq = binary.BigEndian.Uint64(v[9:17])
		e.Conv = imqtt.ConvID(v[17:])
		b := t.tx.Bucket(bucketMsgs).Bucket([]byte(e.Conv))
		if b == nil {
			// A deleted group's message: nil payload, passed over.
			return e, nil
		}
		if p := b.Get(u64(e.Seq)); len(p) >= 8 && int64(binary.BigEndian.Uint64(p)) == e.TS {
			e.Payload = msgJSON(p)
		}
		return e, nil
	}
	return e, fmt.Errorf("%w: stream entry %d of unknown kind", imqtt.ErrStoreCorrupt, pos)
}

var (
	bucketGroups    = []byte("groups")     // group id -> groupRec
	bucketUserConvs = []byte("user_convs") // user \x00 conv -> read seq, join seq, ts
)

func init() { allBuckets = append(allBuckets, bucketGroups, bucketUserConvs) }

func (t *tx) LastSeq(conv imqtt.ConvID) (uint64, error) {
	if b := t.tx.Bucket(bucketMsgs).Bucket([]byte(conv)); b != nil {
		return b.Sequence(), nil
	}
	return 0, nil
}

func (t *tx) LastMessage(conv imqtt.ConvID) ([]byte, bool, error) {
	b := t.tx.Bucket(bucketMsgs).Bucket([]byte(conv))
	if b == nil {
		return nil, false, nil
	}
	k, v := b.Cursor().Last()
	if k == nil {
		return nil, false, nil
	}
	return msgJSON(v), true, nil
}

func (t *tx) History(conv imqtt.ConvID, floor uint64, q storage.HistoryQuery) ([][]byte, error) {
	limit, before := q.Limit, q.Before
	b := t.tx.Bucket(bucketMsgs).Bucket([]byte(conv))
	if b == nil || limit <= 0 {
		return [][]byte{}, nil
	}
	out := make([][]byte, 0, min(limit, 64))
	c := b.Cursor()
	if q.HasAfter {
		start := max(q.After, floor) + 1
		for k, v := c.Seek(u64(start)); k != nil && len(out) < limit; k, v = c.Next() {
			out = append(out, msgJSON(v))
		}
		return out, nil
	}
	var k, v []byte
	if before > 0 {
		k, v = c.Seek(u64(before))
		if k == nil {
			k, v = c.Last()
		}
		for k != nil && beU64(k) >= before {
			k, v = c.Prev()
		}
	} else {
		k, v = c.Last()
	}
	for ; k != nil && beU64(k) > floor && len(out) < limit; k, v = c.Prev() {
		out = append(out, msgJSON(v))
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

type memberRec struct {
	User    string `json:"u"`
	JoinSeq uint64 `json:"s,omitempty"`
	TS      int64  `json:"t"`
}

type groupRec struct {
	Name    string      `json:"name"`
	Owner   string      `json:"owner"`
	Created int64       `json:"created"`
	Members []memberRec `json:"members"`
}

func (t *tx) Group(id string) (storage.Group, bool, error) {
	v := t.tx.Bucket(bucketGroups).Get([]byte(id))
	if v == nil {
		return storage.Group{}, false, nil
	}
	var r groupRec
	if err := json.Unmarshal(v, &r); err != nil {
		return storage.Group{}, false, fmt.Errorf("%w: group %q: %v", imqtt.ErrStoreCorrupt, id, err)
	}
	g := storage.Group{ID: id, Name: r.Name, Owner: r.Owner, Created: r.Created, Members: make([]storage.Member, len(r.Members))}
	for i, m := range r.Members {
		g.Members[i] = storage.Member{User: m.User, JoinSeq: m.JoinSeq, TS: m.TS}
	}
	return g, true, nil
}

func (t *tx) PutGroup(g storage.Group) error {
	if err := t.write(); err != nil {
		return err
	}
	r := groupRec{Name: g.Name, Owner: g.Owner, Created: g.Created, Members: make([]memberRec, len(g.Members))}
	for i, m := range g.Members {
		r.Members[i] = memberRec{User: m.User, JoinSeq: m.JoinSeq, TS: m.TS}
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketGroups).Put([]byte(g.ID), v)
}

func (t *tx) DeleteGroup(id string) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketGroups).Delete([]byte(id)); err != nil {
		return err
	}
	conv := []byte(imqtt.GroupConv(id))
	msgs := t.tx.Bucket(bucketMsgs)
	if msgs.Bucket(conv) != nil {
		// Stream references to these messages are passed over from now
		// on: a new group of this id starts at seq 1 with other
		// acceptance times (see AppendMessageRef).
		if err := msgs.DeleteBucket(conv); err != nil {
			return err
		}
	}
	ids := t.tx.Bucket(bucketMsgIDs)
	prefix := append(append([]byte(nil), conv...), 0)
	var keys [][]byte
	c := ids.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := ids.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func convStateValue(s storage.ConvState) []byte {
	v := make([]byte, 0, 24)
	v = binary.BigEndian.AppendUint64(v, s.ReadSeq)
	v = binary.BigEndian.AppendUint64(v, s.JoinSeq)
	return binary.BigEndian.AppendUint64(v, uint64(s.TS))
}

func decodeConvState(conv imqtt.ConvID, v []byte) (storage.ConvState, error) {
	if len(v) != 24 {
		return storage.ConvState{}, fmt.Errorf("%w: conversation state of %s", imqtt.ErrStoreCorrupt, conv)
	}
	return storage.ConvState{Conv: conv, ReadSeq: beU64(v[:8]), JoinSeq: beU64(v[8:16]), TS: int64(beU64(v[16:]))}, nil
}

func (t *tx) ConvState(user string, conv imqtt.ConvID) (storage.ConvState, bool, error) {
	v := t.tx.Bucket(bucketUserConvs).Get(pairKey(user, string(conv)))
	if v == nil {
		return storage.ConvState{}, false, nil
	}
	s, err := decodeConvState(conv, v)
	return s, err == nil, err
}

func (t *tx) PutConvState(user string, s storage.ConvState) error {
	if err := t.write(); err != nil {
		return err
	}
	return t.tx.Bucket(bucketUserConvs).Put(pairKey(user, string(s.Conv)), convStateValue(s))
}

func (t *tx) DeleteConvState(user string, conv imqtt.ConvID) error {
	if err := t.write(); err != nil {
		return err
	}
	return t.tx.Bucket(bucketUserConvs).Delete(pairKey(user, string(conv)))
}

func (t *tx) ConvStates(user string) ([]storage.ConvState, error) {
	prefix := pairKey(user, "")
	var out []storage.ConvState
	c := t.tx.Bucket(bucketUserConvs).Cursor()
	for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
		s, err := decodeConvState(imqtt.ConvID(k[len(prefix):]), v)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// deleteKeys deletes every key of b that starts with prefix.
func deleteKeys(b *bbolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// deleteWhere deletes every key of b for which match holds.
func deleteWhere(b *bbolt.Bucket, match func(k, v []byte) bool) error {
	var keys [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		if match(k, v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) DeleteUser(id string) error {
	if _, ok, err := getUser(t.tx, id); err != nil || !ok {
		if err == nil {
			err = imqtt.ErrNoSuchUser
		}
		return err
	}
	if err := t.write(); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketUsers).Delete([]byte(id)); err != nil {
		return err
	}
	prefix := pairKey(id, "")
	// Device bindings and cursors: the client ids become free for anyone.
	ud := t.tx.Bucket(bucketUserDevices)
	var clients [][]byte
	c := ud.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		clients = append(clients, append([]byte(nil), k[len(prefix):]...))
	}
	for _, cid := range clients {
		if err := t.tx.Bucket(bucketDevices).Delete(cid); err != nil {
			return err
		}
		if err := t.tx.Bucket(bucketCursors).Delete(cid); err != nil {
			return err
		}
	}
	if err := deleteKeys(ud, prefix); err != nil {
		return err
	}
	if err := deleteWhere(t.tx.Bucket(bucketTokens), func(_, v []byte) bool {
		var r tokenRec
		return json.Unmarshal(v, &r) == nil && r.User == id
	}); err != nil {
		return err
	}
	// Relationships both ways, so that a new user with the same id starts
	// with none.
	second := func(k []byte) bool {
		i := bytes.IndexByte(k, 0)
		return i >= 0 && string(k[i+1:]) == id
	}
	for _, b := range [][]byte{bucketFriends, bucketReqIn, bucketReqOut, bucketBlocks} {
		bk := t.tx.Bucket(b)
		if err := deleteKeys(bk, prefix); err != nil {
			return err
		}
		if err := deleteWhere(bk, func(k, _ []byte) bool { return second(k) }); err != nil {
			return err
		}
	}
	// The idempotency entries of its messages: a new user with the same id
	// must not have its ids taken for resends of the old user's messages
	// (they would be acknowledged with the old seq, and never stored or
	// delivered). The messages themselves stay. The whole index is scanned,
	// not only the conversations the user is in now: a group it left
	// earlier holds entries no state names any more. Removing a user is
	// rare, and the scan reads keys only.
	idb := []byte(id)
	if err := deleteWhere(t.tx.Bucket(bucketMsgIDs), func(k, _ []byte) bool { return bytes.Equal(msgIDSender(k), idb) }); err != nil {
		return err
	}
	if err := deleteKeys(t.tx.Bucket(bucketUserConvs), prefix); err != nil {
		return err
	}
	if t.tx.Bucket(bucketStreams).Bucket([]byte(id)) != nil {
		if err := t.tx.Bucket(bucketStreams).DeleteBucket([]byte(id)); err != nil {
			return err
		}
	}
	return nil
}
