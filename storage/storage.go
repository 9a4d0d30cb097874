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
