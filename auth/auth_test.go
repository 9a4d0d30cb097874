package auth_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) {
	// Cost 10 takes about a second per hash under the race detector.
	auth.SetTestCost()
	os.Exit(m.Run())
}

func TestCostAtLeastTen(t *testing.T) {
	if auth.Cost < 10 {
		t.Errorf("auth.Cost = %d, want >= 10", auth.Cost)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := auth.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(h, []byte("correct horse")) {
		t.Fatal("the hash contains the password")
	}
	if _, err := bcrypt.Cost(h); err != nil {
		t.Errorf("hash is not a bcrypt hash: %v", err)
	}
	h2, err := auth.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(h, h2) {
		t.Error("two hashes of one password are equal: no salt")
	}

	tests := []struct {
		name  string
		hash  []byte
		try   string
		match bool
	}{
		{"right", h, "correct horse", true},
		{"right, second hash", h2, "correct horse", true},
		{"wrong", h, "correct horsE", false},
		{"prefix", h, "correct", false},
		{"longer", h, "correct horse ", false},
		{"empty", h, "", false},
		{"nil hash", nil, "correct horse", false},
		{"nil hash, empty password", nil, "", false},
		{"garbage hash", []byte("not a hash"), "correct horse", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := auth.CheckPassword(tt.hash, tt.try); got != tt.match {
				t.Errorf("CheckPassword = %v, want %v", got, tt.match)
			}
		})
	}
}

func TestPasswordLengthLimits(t *testing.T) {
	if auth.MaxPasswordLen != 72 {
		t.Fatalf("MaxPasswordLen = %d, want 72 (bcrypt's limit)", auth.MaxPasswordLen)
	}
	p72 := strings.Repeat("p", 72)
	p73 := p72 + "x"

	tests := []struct {
		name string
		pw   string
		ok   bool
	}{
		{"one byte", "x", true},
		{"72 bytes", p72, true},
		{"72 bytes multibyte", strings.Repeat("é", 36), true},
		{"empty", "", false},
		{"73 bytes", p73, false},
		{"73 bytes multibyte", strings.Repeat("é", 36) + "x", false},
		{"huge", strings.Repeat("p", 1<<16), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verr := auth.ValidatePassword(tt.pw)
			h, herr := auth.HashPassword(tt.pw)
			if tt.ok {
				if verr != nil || herr != nil {
					t.Fatalf("ValidatePassword = %v, HashPassword = %v; want both nil", verr, herr)
				}
				if !auth.CheckPassword(h, tt.pw) {
					t.Error("CheckPassword rejects the password just hashed")
				}
				return
			}
			for _, err := range []error{verr, herr} {
				if err == nil {
					t.Fatal("password accepted")
				}
				if !errors.Is(err, imqtt.ErrBadRequest) {
					t.Errorf("error %v does not wrap ErrBadRequest", err)
				}
			}
			if h != nil {
				t.Error("HashPassword returned a hash with its error")
			}
		})
	}

	// bcrypt compares only the first 72 bytes; a longer password must not
	// log in as the 72-byte one.
	h, err := auth.HashPassword(p72)
	if err != nil {
		t.Fatal(err)
	}
	if auth.CheckPassword(h, p73) {
		t.Error("CheckPassword accepted a 73-byte password against the hash of its 72-byte prefix")
	}
}

func TestErrorsDoNotLeakPassword(t *testing.T) {
	secret := strings.Repeat("s3cret", 20) // over 72 bytes
	if err := auth.ValidatePassword(secret); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("ValidatePassword error = %v; want an error without the password", err)
	}
	if _, err := auth.HashPassword(secret); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("HashPassword error = %v; want an error without the password", err)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	id, tok, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != auth.TokenLen {
		t.Errorf("len(token) = %d, want TokenLen %d", len(tok), auth.TokenLen)
	}
	if !strings.HasPrefix(tok, "imqtt.") {
		t.Errorf("token %q lacks the imqtt. prefix", tok)
	}
	if len(id) != 16 {
		t.Errorf("token id %q is not 16 characters", id)
	}
	gotID, secret, err := auth.ParseToken(tok)
	if err != nil {
		t.Fatalf("ParseToken(fresh token): %v", err)
	}
	if gotID != id {
		t.Errorf("ParseToken id = %q, want %q", gotID, id)
	}
	if strings.Contains(string(hash), secret) || len(hash) != 32 {
		t.Errorf("hash is %d bytes and must be a SHA-256 digest, not the secret", len(hash))
	}
	if !auth.CheckTokenSecret(hash, secret) {
		t.Error("CheckTokenSecret rejects the token's own secret")
	}

	// 256 random bits: two tokens never share an id or a secret.
	id2, tok2, hash2, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id || tok2 == tok || bytes.Equal(hash, hash2) {
		t.Error("two NewToken calls returned the same id, token or hash")
	}
	_, secret2, err := auth.ParseToken(tok2)
	if err != nil {
		t.Fatal(err)
	}
	if auth.CheckTokenSecret(hash, secret2) {
		t.Error("CheckTokenSecret accepts another token's secret")
	}
}

func TestTokenTampering(t *testing.T) {
	_, tok, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := auth.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}

	// Change one secret character to another valid base64url character, so
	// the token still parses and only the hash check can catch it.
	flip := func(c byte) byte {
		if c == 'A' {
			return 'B'
		}
		return 'A'
	}
	tampered := []byte(secret)
	tampered[10] = flip(tampered[10])
	if auth.CheckTokenSecret(hash, string(tampered)) {
		t.Error("CheckTokenSecret accepts a secret with one character changed")
	}
	for _, bad := range []struct {
		name string
		hash []byte
	}{
		{"nil hash", nil},
		{"short hash", hash[:31]},
		{"long hash", append(append([]byte(nil), hash...), 0)},
	} {
		if auth.CheckTokenSecret(bad.hash, secret) {
			t.Errorf("%s: CheckTokenSecret = true", bad.name)
		}
	}
	if auth.CheckTokenSecret(hash, "") {
		t.Error("CheckTokenSecret accepts an empty secret")
	}

	prefix := len("imqtt.")
	dot := prefix + 16
	replaceAt := func(i int, s string) string { return tok[:i] + s + tok[i+1:] }
	tests := []struct {
		name string
		tok  string
	}{
		{"empty", ""},
		{"password-like", "correct horse"},
		{"one short", tok[:len(tok)-1]},
		{"one long", tok + "A"},
		{"no prefix", "xxxxx." + tok[prefix:]},
		{"upper prefix", "IMQTT." + tok[prefix:]},
		{"no dot", replaceAt(dot, "x")},
		{"bad hex in id", replaceAt(prefix, "z")},
		{"upper-case non-hex in id", replaceAt(prefix+3, "G")},
		{"bad base64 in secret", replaceAt(dot+5, "!")},
		{"std base64 char in secret", replaceAt(dot+5, "+")},
		{"padding in secret", replaceAt(len(tok)-1, "=")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, sec, err := auth.ParseToken(tt.tok)
			if !errors.Is(err, auth.ErrNotToken) {
				t.Fatalf("ParseToken = %q, %q, %v; want ErrNotToken", id, sec, err)
			}
			if id != "" || sec != "" {
				t.Errorf("ParseToken returned %q, %q with its error", id, sec)
			}
		})
	}
}
