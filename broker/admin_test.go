package broker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// adminAPI is an HTTP client of a test broker's admin API.
type adminAPI struct {
	t    *testing.T
	base string
}

// admStart starts a broker with operator "root" (password "pw-root") and
// users alice and bob.
func admStart(t *testing.T, mod func(*broker.Config)) (*brokertest.B, *adminAPI) {
	t.Helper()
	b := brokertest.Start(t, mod)
	b.AddUser("root", "pw-root", imqtt.RoleOperator)
	b.Users("alice", "bob")
	return b, &adminAPI{t: t, base: "http://" + b.Addr("http")}
}

// in returns a copy of a that fails t, for use inside a subtest (failing
// the parent there ends the test run's goroutine in the wrong test).
func (a *adminAPI) in(t *testing.T) *adminAPI {
	return &adminAPI{t: t, base: a.base}
}

// call sends a request authenticated as user (none if user is "") and
// returns the status, headers and body.
func (a *adminAPI) call(user, password, method, path, body string) (int, http.Header, []byte) {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	client := &http.Client{Timeout: brokertest.Timeout}
	resp, err := client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, out
}

// root calls as the operator and fails the test unless the status is want.
func (a *adminAPI) root(method, path, body string, want int) []byte {
	a.t.Helper()
	got, _, out := a.call("root", "pw-root", method, path, body)
	if got != want {
		a.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, got, want, out)
	}
	return out
}

// admErrorOf decodes a JSON error body, failing the test if it is not one.
func admErrorOf(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Fatalf("not a JSON error body: %q (%v)", body, err)
	}
	return *e.Error
}

func admNewToken(t *testing.T, a *adminAPI, user, name string) (id, token string) {
	t.Helper()
	out := a.root("POST", "/v1/users/"+user+"/tokens", `{"name":"`+name+`"}`, http.StatusCreated)
	var r struct{ ID, Token string }
	if err := json.Unmarshal(out, &r); err != nil || r.ID == "" || r.Token == "" {
		t.Fatalf("token response %s: %v", out, err)
	}
	return r.ID, r.Token
}

// admWaitGone fails the test unless the broker ends c's connection.
func admWaitGone(t *testing.T, c *brokertest.Client, what string) {
	t.Helper()
	select {
	case <-c.Gone():
	case <-time.After(brokertest.Timeout):
		t.Fatalf("%s: connection not ended", what)
	}
}

// admWantRefused fails the test unless err is a bad-credentials CONNACK.
func admWantRefused(t *testing.T, err error, v5 bool, what string) {
	t.Helper()
	want := byte(4)
	if v5 {
		want = 0x86
	}
	var ce *brokertest.ConnectError
	if !errors.As(err, &ce) || ce.Code != want {
		t.Fatalf("%s: got %v, want CONNACK 0x%02x", what, err, want)
	}
}

func TestAdminAuth(t *testing.T) {
	_, a := admStart(t, nil)
	_, aliceToken := admNewToken(t, a, "alice", "phone")
	_, rootToken := admNewToken(t, a, "root", "ci")
	tests := []struct {
		name           string
		user, password string
		want           int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong password", "root", "nope", http.StatusUnauthorized},
		{"empty password", "root", "", http.StatusUnauthorized},
		{"unknown user", "ghost", "pw-ghost", http.StatusUnauthorized},
		{"invalid user id", "Not Valid", "pw-root", http.StatusUnauthorized},
		{"password over 72 bytes", "root", strings.Repeat("p", 100), http.StatusUnauthorized},
		{"another user's token", "root", aliceToken, http.StatusUnauthorized},
		{"non-operator", "alice", "pw-alice", http.StatusForbidden},
		{"non-operator token", "alice", aliceToken, http.StatusForbidden},
		{"operator", "root", "pw-root", http.StatusOK},
		{"operator token", "root", rootToken, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h, body := a.in(t).call(tt.user, tt.password, "GET", "/v1/users", "")
			if got != tt.want {
				t.Fatalf("status %d, want %d; body %s", got, tt.want, body)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			switch got {
			case http.StatusOK:
				var r struct{ Users []map[string]any }
				if err := json.Unmarshal(body, &r); err != nil || len(r.Users) != 3 {
					t.Fatalf("users body %s: %v", body, err)
				}
			case http.StatusUnauthorized:
				if w := h.Get("WWW-Authenticate"); !strings.HasPrefix(w, "Basic ") {
					t.Errorf("WWW-Authenticate %q, want a Basic challenge", w)
				}
				admErrorOf(t, body)
			default:
				if msg := admErrorOf(t, body); !strings.Contains(msg, "not an operator") {
					t.Errorf("403 error %q does not say why", msg)
				}
			}
		})
	}
	// Every endpoint is behind the same check, backup included.
	for _, ep := range []struct{ method, path string }{
		{"POST", "/v1/users"}, {"DELETE", "/v1/users/bob"}, {"PUT", "/v1/users/bob/password"},
		{"POST", "/v1/users/bob/tokens"}, {"GET", "/v1/users/bob/tokens"},
		{"DELETE", "/v1/users/bob/tokens/0123456789abcdef"}, {"GET", "/v1/backup"},
	} {
		if got, _, body := a.call("alice", "pw-alice", ep.method, ep.path, `{"password":"x"}`); got != http.StatusForbidden {
			t.Errorf("%s %s as alice: %d %s", ep.method, ep.path, got, body)
		}
		if got, _, _ := a.call("", "", ep.method, ep.path, ""); got != http.StatusUnauthorized {
			t.Errorf("%s %s anonymous: %d", ep.method, ep.path, got)
		}
	}
	a.root("GET", "/v1/users/bob/tokens", "", http.StatusOK)
}

func TestAdminCreateUser(t *testing.T) {
	_, a := admStart(t, nil)
	tests := []struct {
		name    string
		body    string
		want    int
		wantErr string // a part of the error message
		role    imqtt.Role
	}{
		{"user", `{"user":"dave","password":"pw-dave"}`, http.StatusCreated, "", imqtt.RoleUser},
		{"explicit user role", `{"user":"d.2","password":"pw","role":"user"}`, http.StatusCreated, "", imqtt.RoleUser},
		{"operator", `{"user":"erin","password":"pw-erin","role":"operator"}`, http.StatusCreated, "", imqtt.RoleOperator},
		{"exists", `{"user":"alice","password":"other"}`, http.StatusConflict, "already exists", ""},
		{"exists after create", `{"user":"dave","password":"other"}`, http.StatusConflict, "already exists", ""},
		{"empty body", ``, http.StatusBadRequest, "empty", ""},
		{"not JSON", `user=f&password=p`, http.StatusBadRequest, "not valid JSON", ""},
		{"truncated JSON", `{"user":"f","password":`, http.StatusBadRequest, "not valid JSON", ""},
		{"array", `[{"user":"f","password":"p"}]`, http.StatusBadRequest, "must be a JSON object", ""},
		{"trailing data", `{"user":"f","password":"p"} {}`, http.StatusBadRequest, "nothing after", ""},
		{"unknown field", `{"user":"f","password":"p","admin":true}`, http.StatusBadRequest, `unknown field "admin"`, ""},
		{"missing user", `{"password":"p"}`, http.StatusBadRequest, `missing field "user"`, ""},
		{"missing password", `{"user":"f"}`, http.StatusBadRequest, `missing field "password"`, ""},
		{"null user", `{"user":null,"password":"p"}`, http.StatusBadRequest, `missing field "user"`, ""},
		{"user not a string", `{"user":5,"password":"p"}`, http.StatusBadRequest, `field "user" must be a string`, ""},
		{"invalid id", `{"user":"F!","password":"p"}`, http.StatusBadRequest, "invalid id", ""},
		{"id too long", `{"user":"` + strings.Repeat("f", 33) + `","password":"p"}`, http.StatusBadRequest, "invalid id", ""},
		{"empty password", `{"user":"f","password":""}`, http.StatusBadRequest, "password must not be empty", ""},
		{"password over 72 bytes", `{"user":"f","password":"` + strings.Repeat("p", 73) + `"}`, http.StatusBadRequest, "at most 72", ""},
		{"bad role", `{"user":"f","password":"p","role":"root"}`, http.StatusBadRequest, "invalid role", ""},
		{"body over 64 KiB", `{"user":"f","password":"p","role":"` + strings.Repeat("x", 70000) + `"}`, http.StatusBadRequest, "over 64 KiB", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h, body := a.in(t).call("root", "pw-root", "POST", "/v1/users", tt.body)
			if got != tt.want {
				t.Fatalf("status %d, want %d; body %s", got, tt.want, body)
			}
			if tt.want != http.StatusCreated {
				if msg := admErrorOf(t, body); !strings.Contains(msg, tt.wantErr) {
					t.Fatalf("error %q does not contain %q", msg, tt.wantErr)
				}
				return
			}
			var u struct {
				User string
				Role imqtt.Role
			}
			if err := json.Unmarshal(body, &u); err != nil || u.Role != tt.role || !strings.Contains(tt.body, `"`+u.User+`"`) {
				t.Fatalf("created %s (%v), want role %s", body, err, tt.role)
			}
			if loc := h.Get("Location"); loc != "/v1/users/"+u.User {
				t.Errorf("Location %q", loc)
			}
		})
	}
	var list struct {
		Users []struct {
			User string
			Role imqtt.Role
		}
	}
	if err := json.Unmarshal(a.root("GET", "/v1/users", "", http.StatusOK), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range list.Users {
		names = append(names, u.User+":"+string(u.Role))
	}
	want := []string{"alice:user", "bob:user", "d.2:user", "dave:user", "erin:operator", "root:operator"}
	if !slices.Equal(names, want) {
		t.Fatalf("users %v, want %v (a refused request created something?)", names, want)
	}
}

func TestAdminCreatedUserConnects(t *testing.T) {
	b, a := admStart(t, nil)
	a.root("POST", "/v1/users", `{"user":"dave","password":"pw-dave"}`, http.StatusCreated)
	for _, v5 := range []bool{false, true} {
		c, err := b.Dial(brokertest.Opts{V5: v5, User: "dave", Password: "pw-dave", ClientID: "dave-dev"})
		if err != nil {
			t.Fatalf("v5=%v: created user cannot connect: %v", v5, err)
		}
		if code, err := c.Subscribe("im/u/dave/#", 1); err != nil || code != 1 {
			t.Fatalf("v5=%v subscribe: %x %v", v5, code, err)
		}
		c.Close()
		_, err = b.Dial(brokertest.Opts{V5: v5, User: "dave", Password: "wrong", ClientID: "dave-dev"})
		admWantRefused(t, err, v5, "wrong password")
	}
}

func TestAdminRemoveUser(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(map[bool]string{false: "3.1.1", true: "5.0"}[v5], func(t *testing.T) {
			b, a := admStart(t, nil)
			alice := b.Connect(t, "alice", v5)
			bob := b.Connect(t, "bob", v5)
			a.root("DELETE", "/v1/users/alice", "", http.StatusNoContent)
			admWaitGone(t, alice, "removed user")
			_, err := b.Dial(brokertest.Opts{V5: v5, User: "alice", Password: "pw-alice", ClientID: "alice-dev"})
			admWantRefused(t, err, v5, "reconnect of a removed user")
			// Other users' devices stay.
			if code, err := bob.Subscribe("im/u/bob/#", 1); err != nil || code != 1 {
				t.Fatalf("bob after alice's removal: %x %v", code, err)
			}
			select {
			case <-bob.Gone():
				t.Fatal("bob was disconnected")
			default:
			}
			// The removed user's client id is free again.
			b.Users("carol")
			c, err := b.Dial(brokertest.Opts{V5: v5, User: "carol", Password: "pw-carol", ClientID: "alice-dev"})
			if err != nil {
				t.Fatalf("client id of a removed user not freed: %v", err)
			}
			c.Close()

			out := a.root("DELETE", "/v1/users/alice", "", http.StatusNotFound)
			if msg := admErrorOf(t, out); !strings.Contains(msg, "no such user alice") {
				t.Errorf("404 error %q", msg)
			}
			if msg := admErrorOf(t, a.root("DELETE", "/v1/users/Al!ce", "", http.StatusNotFound)); !strings.Contains(msg, "no such user Al!ce") {
				t.Errorf("404 error %q", msg)
			}
			a.root("GET", "/v1/users/alice/tokens", "", http.StatusNotFound)
			a.root("POST", "/v1/users/alice/tokens", "", http.StatusNotFound)
			a.root("PUT", "/v1/users/alice/password", `{"password":"x"}`, http.StatusNotFound)
		})
	}
}

func TestAdminSetPassword(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(map[bool]string{false: "3.1.1", true: "5.0"}[v5], func(t *testing.T) {
			b, a := admStart(t, nil)
			alice := b.Connect(t, "alice", v5)
			a.root("PUT", "/v1/users/alice/password", `{"password":"new secret"}`, http.StatusNoContent)
			admWaitGone(t, alice, "password change")
			_, err := b.Dial(brokertest.Opts{V5: v5, User: "alice", Password: "pw-alice", ClientID: "alice-dev"})
			admWantRefused(t, err, v5, "old password")
			c, err := b.Dial(brokertest.Opts{V5: v5, User: "alice", Password: "new secret", ClientID: "alice-dev"})
			if err != nil {
				t.Fatalf("new password: %v", err)
			}
			c.Close()
			// The new password works for the admin API too (alice is no
			// operator, so: authenticated, then forbidden).
			if got, _, _ := a.call("alice", "new secret", "GET", "/v1/users", ""); got != http.StatusForbidden {
				t.Errorf("admin API with the new password: %d, want 403", got)
			}
		})
	}
	_, a := admStart(t, nil)
	tests := []struct {
		name, path, body string
		want             int
		wantErr          string
	}{
		{"unknown user", "/v1/users/ghost/password", `{"password":"x"}`, http.StatusNotFound, "no such user ghost"},
		{"invalid id", "/v1/users/GHOST/password", `{"password":"x"}`, http.StatusNotFound, "no such user GHOST"},
		// An unknown user is a 404 whatever the body: the user is looked up
		// before the body is read.
		{"unknown user, no body", "/v1/users/ghost/password", ``, http.StatusNotFound, "no such user ghost"},
		{"unknown user, bad JSON", "/v1/users/ghost/password", `{"password"`, http.StatusNotFound, "no such user ghost"},
		{"unknown user, empty password", "/v1/users/ghost/password", `{"password":""}`, http.StatusNotFound, "no such user ghost"},
		{"invalid id, bad JSON", "/v1/users/Nobody/password", `{"pass`, http.StatusNotFound, "no such user Nobody"},
		{"missing password", "/v1/users/alice/password", `{}`, http.StatusBadRequest, `missing field "password"`},
		{"unknown field", "/v1/users/alice/password", `{"password":"x","old":"y"}`, http.StatusBadRequest, `unknown field "old"`},
		{"empty password", "/v1/users/alice/password", `{"password":""}`, http.StatusBadRequest, "must not be empty"},
		{"bad JSON", "/v1/users/alice/password", `{"password"`, http.StatusBadRequest, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if msg := admErrorOf(t, a.in(t).root("PUT", tt.path, tt.body, tt.want)); !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("error %q does not contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestAdminTokens(t *testing.T) {
	start := time.Now()
	b, a := admStart(t, nil)
	phoneID, phone := admNewToken(t, a, "alice", "phone")
	// No body at all: a token without a name.
	var anon struct{ ID, Token string }
	if err := json.Unmarshal(a.root("POST", "/v1/users/alice/tokens", "", http.StatusCreated), &anon); err != nil || anon.ID == "" {
		t.Fatalf("token without body: %v", err)
	}
	if phone == anon.Token || phoneID == anon.ID {
		t.Fatal("two tokens alike")
	}

	out := a.root("GET", "/v1/users/alice/tokens", "", http.StatusOK)
	if bytes.Contains(out, []byte(phone)) || bytes.Contains(out, []byte(anon.Token)) || bytes.Contains(out, []byte(phone[len(phone)-43:])) {
		t.Fatalf("token list shows a secret: %s", out)
	}
	var list struct{ Tokens []map[string]any }
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&list); err != nil || len(list.Tokens) != 2 {
		t.Fatalf("token list %s: %v", out, err)
	}
	names := map[string]string{}
	for _, tk := range list.Tokens {
		if len(tk) != 3 {
			t.Errorf("token entry %v: want exactly id, name, created", tk)
		}
		id, _ := tk["id"].(string)
		name, _ := tk["name"].(string)
		names[id] = name
		// Unix milliseconds, like every time of the protocol: an integer
		// JSON number, not a string.
		n, ok := tk["created"].(json.Number)
		if !ok {
			t.Errorf("created %#v is not a JSON number", tk["created"])
			continue
		}
		ms, err := n.Int64()
		created := time.UnixMilli(ms)
		if err != nil || created.Before(start.Add(-time.Second)) || created.After(time.Now().Add(time.Second)) {
			t.Errorf("created %s (%v) is not Unix milliseconds during the test (from %d)", n, err, start.UnixMilli())
		}
	}
	if names[phoneID] != "phone" || names[anon.ID] != "" || len(names) != 2 {
		t.Fatalf("tokens %v", list.Tokens)
	}
	a.root("GET", "/v1/users/bob/tokens", "", http.StatusOK)

	for _, v5 := range []bool{false, true} {
		dev, err := b.Dial(brokertest.Opts{V5: v5, User: "alice", Password: phone, ClientID: "alice-phone"})
		if err != nil {
			t.Fatalf("v5=%v: connect with token: %v", v5, err)
		}
		dev.Close()
	}
	dev, err := b.Dial(brokertest.Opts{V5: true, User: "alice", Password: phone, ClientID: "alice-phone"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Dial(brokertest.Opts{User: "alice", Password: anon.Token, ClientID: "alice-tablet"})
	if err != nil {
		t.Fatal(err)
	}
	laptop := b.Connect(t, "alice", false)
	if _, err := b.Dial(brokertest.Opts{User: "bob", Password: phone, ClientID: "bob-x"}); err == nil {
		t.Fatal("alice's token let bob in")
	}

	a.root("DELETE", "/v1/users/alice/tokens/"+phoneID, "", http.StatusNoContent)
	admWaitGone(t, dev, "device of a revoked token")
	_, err = b.Dial(brokertest.Opts{V5: true, User: "alice", Password: phone, ClientID: "alice-phone"})
	admWantRefused(t, err, true, "revoked token")
	// Devices on the password or another token stay connected.
	for _, c := range []*brokertest.Client{laptop, other} {
		if code, err := c.Subscribe("im/u/alice/#", 1); err != nil || code != 1 {
			t.Fatalf("%s after revoking another token: %x %v", c.ID, code, err)
		}
		select {
		case <-c.Gone():
			t.Fatalf("%s was disconnected", c.ID)
		default:
		}
	}
	other.Close()

	tests := []struct {
		name, method, path, body string
		want                     int
		wantErr                  string
	}{
		{"revoke twice", "DELETE", "/v1/users/alice/tokens/" + phoneID, "", http.StatusNotFound, "has no token"},
		{"revoke through another user", "DELETE", "/v1/users/bob/tokens/" + anon.ID, "", http.StatusNotFound, "has no token"},
		{"revoke invalid id", "DELETE", "/v1/users/alice/tokens/not-a-token", "", http.StatusBadRequest, "invalid token id"},
		{"create for unknown user", "POST", "/v1/users/ghost/tokens", `{"name":"x"}`, http.StatusNotFound, "no such user ghost"},
		{"list for unknown user", "GET", "/v1/users/ghost/tokens", "", http.StatusNotFound, "no such user ghost"},
		{"create for unknown user, bad name", "POST", "/v1/users/ghost/tokens", `{"name":1}`, http.StatusNotFound, "no such user ghost"},
		{"revoke for unknown user", "DELETE", "/v1/users/ghost/tokens/" + anon.ID, "", http.StatusNotFound, "no such user ghost"},
		{"revoke for unknown user, invalid token id", "DELETE", "/v1/users/ghost/tokens/x", "", http.StatusNotFound, "no such user ghost"},
		{"name too long", "POST", "/v1/users/alice/tokens", `{"name":"` + strings.Repeat("n", 65) + `"}`, http.StatusBadRequest, "at most 64"},
		{"name with control character", "POST", "/v1/users/alice/tokens", `{"name":"a\nb"}`, http.StatusBadRequest, "control"},
		{"name not a string", "POST", "/v1/users/alice/tokens", `{"name":1}`, http.StatusBadRequest, `field "name" must be a string`},
		{"unknown field", "POST", "/v1/users/alice/tokens", `{"label":"x"}`, http.StatusBadRequest, `unknown field "label"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if msg := admErrorOf(t, a.in(t).root(tt.method, tt.path, tt.body, tt.want)); !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("error %q does not contain %q", msg, tt.wantErr)
			}
		})
	}
	// The other token still works.
	c, err := b.Dial(brokertest.Opts{User: "alice", Password: anon.Token, ClientID: "alice-tablet"})
	if err != nil {
		t.Fatalf("remaining token: %v", err)
	}
	c.Close()
}

// TestAdminPathUserUnknown checks every endpoint with a {user} in its path
// against ids no user has: valid ones nobody took and ones that break the id
// rule, which no user can have. Both are unknown users: 404 with a JSON
// error naming the id, whatever the body, and nothing changes.
func TestAdminPathUserUnknown(t *testing.T) {
	b, a := admStart(t, nil)
	tokenID, _ := admNewToken(t, a, "alice", "phone")
	// A token spares each of the many calls below a bcrypt comparison.
	_, rootToken := admNewToken(t, a, "root", "ci")
	endpoints := []struct{ method, path, body string }{
		{"DELETE", "/v1/users/%s", ""},
		{"PUT", "/v1/users/%s/password", `{"password":"new-pw"}`},
		{"PUT", "/v1/users/%s/password", `not json`},
		{"POST", "/v1/users/%s/tokens", `{"name":"x"}`},
		{"POST", "/v1/users/%s/tokens", `{"name":5}`},
		{"GET", "/v1/users/%s/tokens", ""},
		{"DELETE", "/v1/users/%s/tokens/" + tokenID, ""},
		{"DELETE", "/v1/users/%s/tokens/not-a-token-id", ""},
	}
	ids := []struct {
		name, path, want string // want: the id as the error names it
	}{
		{"valid, unknown", "ghost", "ghost"},
		{"capitals", "Nobody", "Nobody"},
		{"a user's id in capitals", "ALICE", "ALICE"},
		{"leading dot", ".alice", ".alice"},
		{"space", "a%20b", "a b"},
		{"over 32 characters", strings.Repeat("a", 33), strings.Repeat("a", 33)},
		{"control character", "a%0Ab", `a\nb`},
		{"very long", strings.Repeat("x", 300), strings.Repeat("x", 40) + "..."},
	}
	for _, id := range ids {
		for _, ep := range endpoints {
			path := strings.Replace(ep.path, "%s", id.path, 1)
			t.Run(id.name+" "+ep.method+" "+strings.Replace(ep.path, "%s", "{user}", 1)+" "+ep.body, func(t *testing.T) {
				got, h, body := a.in(t).call("root", rootToken, ep.method, path, ep.body)
				if got != http.StatusNotFound {
					t.Fatalf("%s %s: %d %s, want 404", ep.method, path, got, body)
				}
				if ct := h.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				if msg := admErrorOf(t, body); msg != "no such user "+id.want {
					t.Errorf("error %q, want %q", msg, "no such user "+id.want)
				}
			})
		}
	}
	// Nothing changed: alice keeps her password and token, and POST with
	// an invalid id in the body is still a 400, not a 404.
	c, err := b.Dial(brokertest.Opts{User: "alice", Password: "pw-alice", ClientID: "alice-dev"})
	if err != nil {
		t.Fatalf("alice after the refused calls: %v", err)
	}
	c.Close()
	if out := a.root("GET", "/v1/users/alice/tokens", "", http.StatusOK); !strings.Contains(string(out), tokenID) {
		t.Errorf("alice's token is gone: %s", out)
	}
	if msg := admErrorOf(t, a.root("POST", "/v1/users", `{"user":"Nobody","password":"pw"}`, http.StatusBadRequest)); !strings.Contains(msg, "invalid id") {
		t.Errorf("POST /v1/users with an invalid id: %q", msg)
	}
}

func TestAdminListUsersOnline(t *testing.T) {
	b, a := admStart(t, nil)
	online := func() map[string]bool {
		var r struct {
			Users []struct {
				User   string
				Role   imqtt.Role
				Online *bool
			}
		}
		if err := json.Unmarshal(a.root("GET", "/v1/users", "", http.StatusOK), &r); err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, u := range r.Users {
			if u.Online == nil {
				t.Fatalf("user %s has no online field", u.User)
			}
			m[u.User+":"+string(u.Role)] = *u.Online
		}
		return m
	}
	want := map[string]bool{"alice:user": false, "bob:user": false, "root:operator": false}
	if got := online(); !admMapsEqual(got, want) {
		t.Fatalf("nobody connected: %v", got)
	}
	alice := b.Connect(t, "alice", true)
	want["alice:user"] = true
	// The device is registered right after its CONNACK is written, so a
	// request racing the CONNACK may still see it offline.
	brokertest.Eventually(t, "alice online in /v1/users", func() bool { return admMapsEqual(online(), want) })
	alice.Close()
	want["alice:user"] = false
	brokertest.Eventually(t, "alice offline in /v1/users", func() bool { return admMapsEqual(online(), want) })
}

func admMapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestAdminUnknownEndpoint(t *testing.T) {
	_, a := admStart(t, nil)
	got, _, body := a.call("root", "pw-root", "GET", "/v1/groups", "")
	if got != http.StatusNotFound || !strings.Contains(admErrorOf(t, body), "no such endpoint") {
		t.Fatalf("unknown path: %d %s", got, body)
	}
	got, h, body := a.call("root", "pw-root", "PATCH", "/v1/users", "")
	if got != http.StatusMethodNotAllowed || h.Get("Allow") != "GET, POST" {
		t.Fatalf("wrong method: %d Allow %q %s", got, h.Get("Allow"), body)
	}
	admErrorOf(t, body)
}

// admLogBuffer is a log sink shared by the broker's goroutines.
type admLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *admLogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *admLogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAdminLog(t *testing.T) {
	logs := &admLogBuffer{}
	_, a := admStart(t, func(c *broker.Config) {
		c.Log.Level = "info"
		c.LogWriter = logs
	})
	a.root("POST", "/v1/users", `{"user":"dave","password":"s3cret-dave"}`, http.StatusCreated)
	a.root("PUT", "/v1/users/dave/password", `{"password":"n3w-secret"}`, http.StatusNoContent)
	_, token := admNewToken(t, a, "dave", "phone")
	a.call("root", "wrong-pw", "GET", "/v1/users", "")
	a.call("alice", "pw-alice", "DELETE", "/v1/users/dave", "")
	a.root("DELETE", "/v1/users/dave", "", http.StatusNoContent)

	type line struct {
		Message, Operator, Action, User string
		Status                          int
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e line
		if json.Unmarshal([]byte(l), &e) == nil && e.Message == "admin" {
			got = append(got, strings.Join([]string{e.Operator, e.Action, e.User, http.StatusText(e.Status)}, " "))
		}
	}
	want := []string{
		"root user.create dave Created",
		"root user.password dave No Content",
		"root token.create dave Created",
		"root user.list  Unauthorized",
		"alice user.remove dave Forbidden",
		"root user.remove dave No Content",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("admin log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	all := logs.String()
	for _, secret := range []string{"s3cret-dave", "n3w-secret", "pw-root", "wrong-pw", "pw-alice", token, token[len(token)-43:]} {
		if strings.Contains(all, secret) {
			t.Errorf("log holds a secret %q", secret)
		}
	}
}
