package storage

import (
	"io"
	"time"

	"github.com/imqtt/imqtt"
)

// User is an account.
type User struct {
	ID      string
	Role    imqtt.Role
	Hash    []byte // password hash (bcrypt); never the password
	Created time.Time
}

// Token is a device token: a long random secret a device may present instead
// of its user's password. Only a hash of the secret is kept.
type Token struct {
	ID      string
	User    string
	Name    string
	Hash    []byte // SHA-256 of the secret
	Created time.Time
}

// Device is a client id bound to a user.
type Device struct {
	ClientID string
	User     string
	Created  time.Time
}

// Users stores accounts.
type Users interface {
	// CreateUser adds u; ErrExists if the id is taken.
	CreateUser(u User) error
	// User returns the user with id; ErrNoSuchUser if there is none.
	User(id string) (User, error)
	// SetPasswordHash replaces a user's hash; ErrNoSuchUser if unknown.
	SetPasswordHash(id string, hash []byte) error
	// DeleteUser removes a user with its device bindings and tokens;
	// ErrNoSuchUser if unknown.
	DeleteUser(id string) error
	// ListUsers returns every user in id order.
	ListUsers() ([]User, error)
}

// Devices binds client ids to users.
type Devices interface {
	// BindDevice binds clientID to user unless it is bound already, and
	// returns the user it is bound to (user, or the earlier owner).
	BindDevice(clientID, user string) (owner string, err error)
	// Device returns the binding of clientID; ErrNotFound if unbound.
	Device(clientID string) (Device, error)
}

// Tokens stores device tokens.
type Tokens interface {
	// CreateToken stores t; ErrNoSuchUser if its user is unknown.
	CreateToken(t Token) error
	// Token returns the token with id; ErrNotFound if there is none.
	Token(id string) (Token, error)
	// ListTokens returns the user's tokens, oldest first.
	ListTokens(user string) ([]Token, error)
	// DeleteToken removes a token of user; ErrNotFound if it has none with id.
	DeleteToken(user, id string) error
}

// Backup writes a consistent copy of the whole store.
type Backup interface {
	WriteBackup(w io.Writer) (int64, error)
}

// FriendRequest is a pending friend request.
type FriendRequest struct {
	From string
	To   string
	Note string
	TS   int64 // Unix milliseconds
}

// Entry is one item of a user's delivery stream: an event, or a reference to
// a message of a conversation. Every device of the user keeps a cursor into
// the stream.
type Entry struct {
	Pos uint64
	TS  int64 // Unix milliseconds, when it was appended
	// Conv and Seq name the message; Conv is "" for an event.
	Conv imqtt.ConvID
	Seq  uint64
	// Payload is the JSON to deliver: the event, or the stored message.
	Payload []byte
}

// Tx is one atomic unit of work on the store, seen through domain
// operations. A function given to Update may run more than once (when a
// batch it shared is retried), so it must only assign to what it captures.
// Reads return errors only for a damaged store.
type Tx interface {
	UserExists(id string) (bool, error)
	// DeleteUser removes a user and everything keyed by it: device
	// bindings, cursors, tokens, friendships, requests and blocks both ways,
	// conversation states, its idempotency entries (in every conversation,
	// also groups it left before) and its delivery stream. ErrNoSuchUser if
	// unknown.
	DeleteUser(id string) error

	AreFriends(a, b string) (bool, error)
	// SetFriends makes a and b friends since ts.
	SetFriends(a, b string, ts int64) error
	// Unfriend ends the friendship of a and b.
	Unfriend(a, b string) error
	// Friends lists user's friends in id order.
	Friends(user string) ([]string, error)

	FriendRequest(from, to string) (FriendRequest, bool, error)
	PutFriendRequest(r FriendRequest) error
	DeleteFriendRequest(from, to string) error
	// FriendRequests lists the requests to and from user, oldest first.
	FriendRequests(user string) (incoming, outgoing []FriendRequest, err error)

	// Blocks reports whether a has blocked b.
	Blocks(a, b string) (bool, error)
	SetBlock(a, b string, ts int64, on bool) error
	// Blocked lists whom user has blocked, in id order.
	Blocked(user string) ([]string, error)

	// AppendEvent appends an event for every device of user and returns its
	// stream position.
	AppendEvent(user string, ts int64, payload []byte) (uint64, error)
	// AppendMessage assigns conv's next seq, stores build(seq) as the
	// message accepted at ts (Unix ms) and, when id is not "", remembers
	// (conv, sender, id) -> seq for idempotent retries.
	AppendMessage(conv imqtt.ConvID, sender, id string, ts int64, build func(seq uint64) []byte) (uint64, error)
	// MessageByID returns the seq and payload of the message sender sent in
	// conv with id, if there is one.
	MessageByID(conv imqtt.ConvID, sender, id string) (seq uint64, payload []byte, ok bool, err error)
	// AppendMessageRef appends a reference to message (conv, seq), accepted
	// at ts, to user's stream. A reference finds its message only if the
	// message's ts is still ts: a group deleted and created again under the
	// same id starts at seq 1, and old references must not reach the new
	// group's messages.
	AppendMessageRef(user string, ts int64, conv imqtt.ConvID, seq uint64) (uint64, error)
	// LastSeq returns conv's last seq (0 if it has no messages).
	LastSeq(conv imqtt.ConvID) (uint64, error)
	// LastMessage returns conv's last message, if any.
	LastMessage(conv imqtt.ConvID) ([]byte, bool, error)
	// History returns up to q.Limit messages of conv with seq > floor, in
	// ascending seq: with q.HasAfter the first ones after q.After, else the
	// last ones before q.Before (0: no upper bound).
	History(conv imqtt.ConvID, floor uint64, q HistoryQuery) ([][]byte, error)

	// Group returns a group.
	Group(id string) (Group, bool, error)
	// PutGroup creates or replaces a group.
	PutGroup(g Group) error
	// DeleteGroup removes a group and its messages.
	DeleteGroup(id string) error

	// ConvState returns user's state in conv, if user is in it.
	ConvState(user string, conv imqtt.ConvID) (ConvState, bool, error)
	PutConvState(user string, s ConvState) error
	DeleteConvState(user string, conv imqtt.ConvID) error
	// ConvStates lists every conversation user is in.
	ConvStates(user string) ([]ConvState, error)
}

// HistoryQuery selects a page of a conversation's messages.
type HistoryQuery struct {
	Before   uint64
	After    uint64
	HasAfter bool
	Limit    int
}

// Group is a group conversation. Members are in join order.
type Group struct {
	ID      string
	Name    string
	Owner   string
	Created int64
	Members []Member
}

// Member is a group member.
type Member struct {
	User string
	// JoinSeq is the group's last seq when the member joined: it sees the
	// messages after it.
	JoinSeq uint64
	TS      int64
}

// IndexOf returns the index of user in g.Members, or -1.
func (g *Group) IndexOf(user string) int {
	for i, m := range g.Members {
		if m.User == user {
			return i
		}
	}
	return -1
}

// ConvState is a user's place in a conversation.
type ConvState struct {
	Conv    imqtt.ConvID
	ReadSeq uint64
	// JoinSeq is the last seq the user may not read: group members added
	// later, and a user whose id was removed and created again in a DM
	// begun before, see only what follows it. 0 otherwise.
	JoinSeq uint64
	// TS is when the user joined (groups) or the DM began.
	TS int64
}

// Transactor runs functions as atomic units. Update commits durably before
// it returns nil; concurrent Updates may share one commit.
type Transactor interface {
	View(fn func(Tx) error) error
	Update(fn func(Tx) error) error
}

// Streams reads users' delivery streams and keeps devices' cursors.
type Streams interface {
	// ReadStream returns up to max entries of user's stream after pos, with
	// message payloads resolved, in order. dst is reused if it has room.
	ReadStream(user string, after uint64, max int, dst []Entry) ([]Entry, error)
	// StreamHead returns the position of user's last entry (0 if none).
	StreamHead(user string) (uint64, error)
	// Cursor returns the last position clientID acknowledged.
	Cursor(clientID string) (uint64, error)
	// SaveCursors records acknowledged positions. It need not be durable
	// before it returns: a lost cursor only means redelivery.
	SaveCursors(cursors map[string]uint64) error
}
