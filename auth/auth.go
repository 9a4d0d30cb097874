package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imqtt/imqtt"
	"golang.org/x/crypto/bcrypt"
)

// Cost is the bcrypt cost of new hashes.
const Cost = 10

// cost is the cost in use: Cost, except in tests that call SetTestCost.
var cost atomic.Int32

func init() { cost.Store(Cost) }

// SetTestCost lowers the bcrypt cost to bcrypt.MinCost for tests, where
// cost 10 takes over a second per hash under the race detector. Hashes keep
// their cost, so a store written this way is only for tests.
func SetTestCost() { cost.Store(int32(bcrypt.MinCost)) }

// MaxPasswordLen is the longest password in bytes: bcrypt reads no further.
const MaxPasswordLen = 72

// sem bounds concurrent bcrypt work process-wide.
var sem = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))

func acquire() func() {
	sem <- struct{}{}
	return func() { <-sem }
}

// ValidatePassword checks a new password: 1 to 72 bytes.
func ValidatePassword(p string) error {
	if p == "" {
		return imqtt.Errorf(imqtt.CodeBadRequest, "password must not be empty")
	}
	if len(p) > MaxPasswordLen {
		return imqtt.Errorf(imqtt.CodeBadRequest, "password must be at most %d bytes", MaxPasswordLen)
	}
	return nil
}

// HashPassword validates and hashes p.
func HashPassword(p string) ([]byte, error) {
	if err := ValidatePassword(p); err != nil {
		return nil, err
	}
	defer acquire()()
	h, err := bcrypt.GenerateFromPassword([]byte(p), int(cost.Load()))
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// dummyHash makes a check for an unknown user cost as much as for a known
// one, so timing does not tell which user ids exist. It is made on first use,
// at the cost then in force.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("imqtt-dummy-password"), int(cost.Load()))
	return h
})

// CheckPassword reports whether p matches hash. A nil hash (unknown user)
// costs the same as a real check and is false.
func CheckPassword(hash []byte, p string) bool {
	if len(p) > MaxPasswordLen {
		return false
	}
	defer acquire()()
	if hash == nil {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(p))
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(p)) == nil
}

// Token format: "imqtt." + 16 hex id + "." + 43 base64url secret.
const (
	tokenPrefix = "imqtt."
	tokenIDLen  = 16
	secretLen   = 43
	// TokenLen is the length of a token string.
	TokenLen = len(tokenPrefix) + tokenIDLen + 1 + secretLen
)

// ErrNotToken is returned by ParseToken for a string not shaped like a token.
var ErrNotToken = errors.New("not a device token")

// NewToken returns a new token id, the token string to give the device once,
// and the hash to store.
func NewToken() (id, token string, hash []byte, err error) {
	var idb [tokenIDLen / 2]byte
	var sec [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", nil, fmt.Errorf("new token: %w", err)
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", "", nil, fmt.Errorf("new token: %w", err)
	}
	id = hex.EncodeToString(idb[:])
	secret := base64.RawURLEncoding.EncodeToString(sec[:])
	h := sha256.Sum256([]byte(secret))
	return id, tokenPrefix + id + "." + secret, h[:], nil
}

// ParseToken splits a token string into its id and secret.
func ParseToken(s string) (id, secret string, err error) {
	if len(s) != TokenLen || !strings.HasPrefix(s, tokenPrefix) || s[len(tokenPrefix)+tokenIDLen] != '.' {
		return "", "", ErrNotToken
	}
	id = s[len(tokenPrefix) : len(tokenPrefix)+tokenIDLen]
	secret = s[len(tokenPrefix)+tokenIDLen+1:]
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", ErrNotToken
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return "", "", ErrNotToken
	}
	return id, secret, nil
}

// CheckTokenSecret reports, in constant time, whether secret matches hash.
func CheckTokenSecret(hash []byte, secret string) bool {
	h := sha256.Sum256([]byte(secret))
	return len(hash) == len(h) && subtle.ConstantTimeCompare(hash, h[:]) == 1
}
