package broker

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/storage"
)

// maxAdminBody bounds an admin request body: every valid one is a few
// hundred bytes.
const maxAdminBody = 64 << 10

// maxTokenName is the longest token name, in characters.
const maxTokenName = 64

// adminMethods are the methods tried to tell a wrong method (405) from an
// unknown path (404).
var adminMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete}

// registerAdmin adds the user administration API and the online backup of
// PROTOCOL.md section 7 to mux.
func (b *Broker) registerAdmin(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/users", b.admin("user.create", b.adminCreateUser))
	mux.HandleFunc("GET /v1/users", b.admin("user.list", b.adminListUsers))
	mux.HandleFunc("DELETE /v1/users/{user}", b.admin("user.remove", b.adminRemoveUser))
	mux.HandleFunc("PUT /v1/users/{user}/password", b.admin("user.password", b.adminSetPassword))
	mux.HandleFunc("POST /v1/users/{user}/tokens", b.admin("token.create", b.adminCreateToken))
	mux.HandleFunc("GET /v1/users/{user}/tokens", b.admin("token.list", b.adminListTokens))
	mux.HandleFunc("DELETE /v1/users/{user}/tokens/{id}", b.admin("token.revoke", b.adminRevokeToken))
	mux.HandleFunc("GET /v1/backup", b.admin("backup", b.adminBackup))
	// Without this, ServeMux answers unknown paths and wrong methods in
	// plain text; API clients expect JSON everywhere under /v1/.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range adminMethods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/v1/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; allowed: %s", r.Method, strings.Join(allow, ", ")))
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint "+r.URL.Path)
	})
}

// adminCall is one admin request as the log line reports it.
type adminCall struct {
	operator string
	// target is the user acted on, if any.
	target string
	status int
	// msg is the error sent to the client, or the cause of a 500 (never a
	// secret: store errors and our own validation messages only).
	msg string
}

// fail writes a JSON error and records it.
func (c *adminCall) fail(w http.ResponseWriter, status int, msg string) {
	c.status, c.msg = status, msg
	writeError(w, status, msg)
}

// internal answers a store failure without describing it to the client.
func (c *adminCall) internal(w http.ResponseWriter, err error) {
	c.status, c.msg = http.StatusInternalServerError, err.Error()
	writeError(w, http.StatusInternalServerError, "internal error")
}

// reply writes v as JSON with status, or an empty body for 204.
func (c *adminCall) reply(w http.ResponseWriter, status int, v any) {
	c.status = status
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, v)
}

type adminHandler func(w http.ResponseWriter, r *http.Request, c *adminCall)

// admin authenticates an operator, runs h and logs the outcome.
func (b *Broker) admin(action string, h adminHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := &adminCall{target: r.PathValue("user")}
		start := time.Now()
		// Deferred so that an aborted backup stream is logged too.
		defer func() { b.logAdmin(r, action, c, time.Since(start)) }()
		user, password, ok := r.BasicAuth()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="imqtt", charset="UTF-8"`)
			c.fail(w, http.StatusUnauthorized, "authentication required: HTTP basic auth with an operator's user id and password")
			return
		}
		if imqtt.ValidID(user) {
			c.operator = user
		}
		role, err := b.checkCredentials(user, password)
		switch {
		case errors.Is(err, imqtt.ErrUnauthorized):
			w.Header().Set("WWW-Authenticate", `Basic realm="imqtt", charset="UTF-8"`)
			c.fail(w, http.StatusUnauthorized, "bad user name or password")
			return
		case err != nil:
			c.internal(w, err)
			return
		case role != imqtt.RoleOperator:
			c.fail(w, http.StatusForbidden, "user "+user+" is not an operator")
			return
		}
		h(w, r, c)
	}
}

// checkCredentials returns the role of user if password is its password or
// one of its device tokens, else ErrUnauthorized. An unknown user costs as
// much as a wrong password, so timing does not reveal which ids exist.
func (b *Broker) checkCredentials(user, password string) (imqtt.Role, error) {
	if !imqtt.ValidID(user) || password == "" {
		auth.CheckPassword(nil, password)
		return "", imqtt.ErrUnauthorized
	}
	if id, secret, err := auth.ParseToken(password); err == nil {
		t, err := b.db.Token(id)
		if errors.Is(err, imqtt.ErrNotFound) || err == nil && (t.User != user || !auth.CheckTokenSecret(t.Hash, secret)) {
			return "", imqtt.ErrUnauthorized
		}
		if err != nil {
			return "", err
		}
		u, err := b.db.User(user)
		if errors.Is(err, imqtt.ErrNoSuchUser) {
			return "", imqtt.ErrUnauthorized
		}
		return u.Role, err
	}
	u, err := b.db.User(user)
	switch {
	case errors.Is(err, imqtt.ErrNoSuchUser):
		auth.CheckPassword(nil, password)
		return "", imqtt.ErrUnauthorized
	case err != nil:
		return "", err
	case !auth.CheckPassword(u.Hash, password):
		return "", imqtt.ErrUnauthorized
	}
	return u.Role, nil
}

func (b *Broker) logAdmin(r *http.Request, action string, c *adminCall, d time.Duration) {
	var ev *zerolog.Event
	switch {
	case c.status >= 500:
		ev = b.log.Error()
	case c.status == http.StatusUnauthorized || c.status == http.StatusForbidden:
		ev = b.log.Warn()
	default:
		ev = b.log.Info()
	}
	ev = ev.Str("operator", c.operator).Str("action", action).Str("remote", r.RemoteAddr).
		Int("status", c.status).Dur("took", d)
	if c.target != "" {
		ev = ev.Str("user", logSafe(c.target))
	}
	if c.msg != "" {
		ev = ev.Str("error", c.msg)
	}
	ev.Msg("admin")
}

// logSafe shortens a path value, which may be anything a client sent.
func logSafe(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeBody reads one JSON object into dst, refusing unknown fields,
// trailing data and bodies over maxAdminBody. An empty body is an error
// unless emptyOK. The error text names the problem for the client.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any, emptyOK bool) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			return errors.New("body must hold one JSON object and nothing after it")
		}
		return nil
	}
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		if emptyOK {
			return nil
		}
		return errors.New("body is empty: expected a JSON object")
	case errors.As(err, &maxErr):
		return fmt.Errorf("body is over %d KiB", maxAdminBody>>10)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("body is not valid JSON (at byte %d): %s", syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("body is not valid JSON: it ends early")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return errors.New("body must be a JSON object")
		}
		return fmt.Errorf("field %q must be %s", typeErr.Field, jsonKind(typeErr.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return fmt.Errorf("body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonKind names the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a number"
}

// pathUser returns the {user} path value. An id that breaks the id rule
// names no user that could exist, so it is as unknown as a valid id nobody
// has: 404, as PROTOCOL.md section 7 says for an unknown user.
func pathUser(w http.ResponseWriter, r *http.Request, c *adminCall) (string, bool) {
	id := r.PathValue("user")
	if !imqtt.ValidID(id) {
		c.fail(w, http.StatusNotFound, "no such user "+logSafe(id))
		return "", false
	}
	return id, true
}

// knownUser returns the {user} path value if such a user exists, else
// answers 404. Handlers call it before reading the body, so that an unknown
// user is a 404 whatever was sent with it.
func (b *Broker) knownUser(w http.ResponseWriter, r *http.Request, c *adminCall) (string, bool) {
	id, ok := pathUser(w, r, c)
	if !ok {
		return "", false
	}
	if _, err := b.db.User(id); err != nil {
		c.failUser(w, id, err)
		return "", false
	}
	return id, true
}

type userJSON struct {
	User   string     `json:"user"`
	Role   imqtt.Role `json:"role"`
	Online *bool      `json:"online,omitempty"`
}

// adminCreateUser is POST /v1/users.
func (b *Broker) adminCreateUser(w http.ResponseWriter, r *http.Request, c *adminCall) {
	var body struct {
		User     *string `json:"user"`
		Password *string `json:"password"`
		Role     string  `json:"role"`
	}
	if err := decodeBody(w, r, &body, false); err != nil {
		c.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case body.User == nil:
		c.fail(w, http.StatusBadRequest, `missing field "user"`)
		return
	case body.Password == nil:
		c.fail(w, http.StatusBadRequest, `missing field "password"`)
		return
	}
	c.target = *body.User
	if err := imqtt.ValidateID(*body.User); err != nil {
		c.fail(w, http.StatusBadRequest, "user: "+imqtt.ErrorMessage(err))
		return
	}
	if err := auth.ValidatePassword(*body.Password); err != nil {
		c.fail(w, http.StatusBadRequest, imqtt.ErrorMessage(err))
		return
	}
	role, err := imqtt.ParseRole(body.Role)
	if err != nil {
		c.fail(w, http.StatusBadRequest, "role: "+imqtt.ErrorMessage(err))
		return
	}
	hash, err := auth.HashPassword(*body.Password)
	if err != nil {
		c.internal(w, err)
		return
	}
	err = b.db.CreateUser(storage.User{ID: *body.User, Role: role, Hash: hash})
	switch {
	case errors.Is(err, imqtt.ErrExists):
		c.fail(w, http.StatusConflict, "user "+*body.User+" already exists")
		return
	case err != nil:
		c.internal(w, err)
		return
	}
	w.Header().Set("Location", "/v1/users/"+*body.User)
	c.reply(w, http.StatusCreated, userJSON{User: *body.User, Role: role})
}

// adminListUsers is GET /v1/users.
func (b *Broker) adminListUsers(w http.ResponseWriter, r *http.Request, c *adminCall) {
	users, err := b.db.ListUsers()
	if err != nil {
		c.internal(w, err)
		return
	}
	out := make([]userJSON, len(users))
	for i, u := range users {
		on := b.hook.Online(u.ID)
		out[i] = userJSON{User: u.ID, Role: u.Role, Online: &on}
	}
	c.reply(w, http.StatusOK, map[string]any{"users": out})
}

// failUser answers the error of an operation on user id: 404 for an
// unknown user, 500 for anything else. It reports whether there was one.
func (c *adminCall) failUser(w http.ResponseWriter, id string, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, imqtt.ErrNoSuchUser):
		c.fail(w, http.StatusNotFound, "no such user "+id)
	default:
		c.internal(w, err)
	}
	return true
}

// adminRemoveUser is DELETE /v1/users/{user}.
func (b *Broker) adminRemoveUser(w http.ResponseWriter, r *http.Request, c *adminCall) {
	id, ok := pathUser(w, r, c)
	if !ok {
		return
	}
	err := b.chat.RemoveUser(id)
	if c.failUser(w, id, err) {
		return
	}
	// After the delete, so that a device cannot authenticate again in
	// between.
	b.hook.Disconnect(id, "")
	c.reply(w, http.StatusNoContent, nil)
}

// adminSetPassword is PUT /v1/users/{user}/password.
func (b *Broker) adminSetPassword(w http.ResponseWriter, r *http.Request, c *adminCall) {
	id, ok := b.knownUser(w, r, c)
	if !ok {
		return
	}
	var body struct {
		Password *string `json:"password"`
	}
	if err := decodeBody(w, r, &body, false); err != nil {
		c.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Password == nil {
		c.fail(w, http.StatusBadRequest, `missing field "password"`)
		return
	}
	if err := auth.ValidatePassword(*body.Password); err != nil {
		c.fail(w, http.StatusBadRequest, imqtt.ErrorMessage(err))
		return
	}
	hash, err := auth.HashPassword(*body.Password)
	if err != nil {
		c.internal(w, err)
		return
	}
	// The user may have been removed since knownUser: still a 404.
	err = b.db.SetPasswordHash(id, hash)
	if c.failUser(w, id, err) {
		return
	}
	b.hook.Disconnect(id, "")
	c.reply(w, http.StatusNoContent, nil)
}

// adminCreateToken is POST /v1/users/{user}/tokens.
func (b *Broker) adminCreateToken(w http.ResponseWriter, r *http.Request, c *adminCall) {
	id, ok := b.knownUser(w, r, c)
	if !ok {
		return
	}
	var body struct {
		Name string `json:"name"`
	}
	if err := decodeBody(w, r, &body, true); err != nil {
		c.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := validateTokenName(body.Name); err != nil {
		c.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	tid, token, hash, err := auth.NewToken()
	if err != nil {
		c.internal(w, err)
		return
	}
	// CreateToken checks the user again, in its own transaction.
	err = b.db.CreateToken(storage.Token{ID: tid, User: id, Name: body.Name, Hash: hash})
	if c.failUser(w, id, err) {
		return
	}
	c.reply(w, http.StatusCreated, map[string]string{"id": tid, "token": token})
}

func validateTokenName(n string) error {
	if !utf8.ValidString(n) {
		return errors.New("name: must be valid UTF-8")
	}
	if utf8.RuneCountInString(n) > maxTokenName {
		return fmt.Errorf("name: must be at most %d characters", maxTokenName)
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return errors.New("name: must not hold control characters")
		}
	}
	return nil
}

// adminListTokens is GET /v1/users/{user}/tokens.
func (b *Broker) adminListTokens(w http.ResponseWriter, r *http.Request, c *adminCall) {
	// ListTokens of an unknown user is merely empty, hence knownUser.
	id, ok := b.knownUser(w, r, c)
	if !ok {
		return
	}
	ts, err := b.db.ListTokens(id)
	if err != nil {
		c.internal(w, err)
		return
	}
	type tokenJSON struct {
		ID   string `json:"id"`
		Name string `json:"name"`
		// Created is in Unix milliseconds, like every time of the protocol.
		Created int64 `json:"created"`
	}
	out := make([]tokenJSON, len(ts))
	for i, t := range ts {
		out[i] = tokenJSON{ID: t.ID, Name: t.Name, Created: t.Created.UnixMilli()}
	}
	c.reply(w, http.StatusOK, map[string]any{"tokens": out})
}

// adminRevokeToken is DELETE /v1/users/{user}/tokens/{id}.
func (b *Broker) adminRevokeToken(w http.ResponseWriter, r *http.Request, c *adminCall) {
	id, ok := b.knownUser(w, r, c)
	if !ok {
		return
	}
	tid := r.PathValue("id")
	if !validTokenID(tid) {
		c.fail(w, http.StatusBadRequest, "invalid token id: must be 16 hex digits")
		return
	}
	err := b.db.DeleteToken(id, tid)
	switch {
	case errors.Is(err, imqtt.ErrNotFound):
		c.fail(w, http.StatusNotFound, "user "+id+" has no token "+tid)
		return
	case err != nil:
		c.internal(w, err)
		return
	}
	b.hook.Disconnect(id, tid)
	c.reply(w, http.StatusNoContent, nil)
}

// validTokenID matches the ids auth.NewToken makes.
func validTokenID(s string) bool {
	if len(s) != 16 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// adminBackup is GET /v1/backup: the store as of one read transaction,
// streamed while writers go on.
func (b *Broker) adminBackup(w http.ResponseWriter, r *http.Request, c *adminCall) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", "attachment; filename=imqtt.db")
	h.Set("Cache-Control", "no-store")
	c.status = http.StatusOK
	if n, err := b.db.WriteBackup(w); err != nil {
		if n == 0 {
			h.Del("Content-Disposition")
			c.internal(w, err)
			return
		}
		c.status, c.msg = http.StatusInternalServerError, err.Error()
		// The 200 is gone already; breaking the connection is the only way
		// to tell the client the copy is incomplete.
		panic(http.ErrAbortHandler)
	}
}
