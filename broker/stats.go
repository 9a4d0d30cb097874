package broker

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/mochi-mqtt/server/v2/system"

	"github.com/imqtt/imqtt"
)

// Stats are the figures of GET /stats (PROTOCOL.md section 7); every field
// is described in docs/STATS.md. /metrics exports the same figures.
type Stats struct {
	Users                   int     `json:"users"`
	UsersOnline             int     `json:"users_online"`
	Devices                 int     `json:"devices"`
	DevicesOnline           int     `json:"devices_online"`
	Conversations           int     `json:"conversations"`
	Groups                  int     `json:"groups"`
	Messages                uint64  `json:"messages"`
	StreamEntries           uint64  `json:"stream_entries"`
	Backlog                 uint64  `json:"backlog"`
	BacklogDevices          int     `json:"backlog_devices"`
	OldestBacklogAgeSeconds float64 `json:"oldest_backlog_age_seconds"`
	StoreBytes              int64   `json:"store_bytes"`

	Commits        int64   `json:"commits"`
	CommitLatency  Latency `json:"commit_latency_seconds"`
	DeliverLatency Latency `json:"deliver_latency_seconds"`

	Requests          map[string]uint64 `json:"requests_by_op"`
	RequestsRefused   map[string]uint64 `json:"requests_refused_by_code"`
	MessagesAccepted  uint64            `json:"messages_accepted"`
	IdempotentRetries uint64            `json:"idempotent_retries"`
	MessagesRefused   map[string]uint64 `json:"messages_refused_by_code"`
	Refusals          map[string]uint64 `json:"refusals_by_code"`
	ConnectRefused    map[string]uint64 `json:"connect_refused_by_reason"`
	Limited           map[string]uint64 `json:"limited_by_limit"`

	// Broker holds mochi's $SYS figures.
	Broker system.Info `json:"broker"`
}

// Stats returns the broker's figures. On a store error it still returns
// those that need no store (who is online, counters, mochi's figures).
func (b *Broker) Stats() (Stats, error) {
	now := time.Now()
	s := Stats{Commits: b.db.Commits()}
	s.DevicesOnline, s.UsersOnline = b.hook.DevicesOnline()
	b.obs.fill(&s)

	info := b.server.Info.Clone()
	// mochi refreshes these on its $SYS tick only (every 10 s here).
	info.Time = now.Unix()
	info.Uptime = info.Time - info.Started
	info.Threads = int64(runtime.NumGoroutine())
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	info.MemoryAlloc = int64(ms.HeapInuse)
	s.Broker = *info

	st, err := b.db.Stats()
	if err != nil {
		return s, err
	}
	s.Users, s.Devices, s.Groups, s.Conversations = st.Users, st.Devices, st.Groups, st.Conversations
	s.Messages, s.StreamEntries, s.StoreBytes = st.Messages, st.StreamEntries, st.Bytes
	s.Backlog, s.BacklogDevices = st.Backlog, st.BacklogDevices
	if st.OldestBacklogTS > 0 {
		s.OldestBacklogAgeSeconds = max(0, float64(now.UnixMilli()-st.OldestBacklogTS)/1000)
	}
	return s, nil
}

// fill copies the observer's counters into s. Maps hold every known label
// value, zeros included, and the catch-all ones ("" and "other") when used.
func (o *observer) fill(s *Stats) {
	s.Requests = make(map[string]uint64, len(requestOps))
	s.RequestsRefused = make(map[string]uint64, len(codeLabels))
	s.MessagesRefused = make(map[string]uint64, len(codeLabels))
	s.Refusals = make(map[string]uint64, len(codeLabels))
	for i, op := range requestOps {
		for j, code := range codeLabels {
			n := o.requests[i][j].Load()
			if n > 0 || i != len(requestOps)-1 {
				s.Requests[op] += n
			}
			if j != codeOK && (n > 0 || j != codeOther) {
				s.RequestsRefused[code] += n
			}
		}
	}
	for j, code := range codeLabels {
		if n := o.refused[j].Load(); j != codeOK && (n > 0 || j != codeOther) {
			s.MessagesRefused[code] = n
		}
	}
	for code, n := range s.RequestsRefused {
		s.Refusals[code] += n
	}
	for code, n := range s.MessagesRefused {
		s.Refusals[code] += n
	}
	s.MessagesAccepted = o.accepted.Load()
	s.IdempotentRetries = o.duplicates.Load()
	s.ConnectRefused = make(map[string]uint64, len(connectReasons))
	for i, r := range connectReasons {
		if n := o.connectRefused[i].Load(); n > 0 || i != len(connectReasons)-1 {
			s.ConnectRefused[r] = n
		}
	}
	s.Limited = make(map[string]uint64, len(limitNames))
	for i, l := range limitNames {
		if n := o.limited[i].Load(); n > 0 || i != len(limitNames)-1 {
			s.Limited[l] = n
		}
	}
	s.CommitLatency = summarize(o.commit)
	s.DeliverLatency = summarize(o.deliver)
}

// registerStats adds GET /stats and GET /metrics to mux, behind statsAccess.
func (b *Broker) registerStats(mux *http.ServeMux) {
	mux.Handle("GET /stats", b.statsGuard(http.HandlerFunc(b.serveStats)))
	mux.Handle("GET /metrics", b.statsGuard(b.obs.handler(b.log)))
}

func (b *Broker) serveStats(w http.ResponseWriter, r *http.Request) {
	s, err := b.Stats()
	if err != nil {
		b.log.Error().Err(err).Msg("stats: reading the store failed")
		statsError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
}

func (b *Broker) statsGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, msg := b.statsAccess(r, b.Addr("http"))
		if status != 0 {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="imqtt", charset="UTF-8"`)
			}
			statsError(w, status, msg)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// statsOpen reports whether an HTTP listener bound to addr serves /stats
// and /metrics without credentials: only when it is bound to a loopback
// address, so that only this host can reach it. A wildcard (":8080",
// "0.0.0.0:8080") or any other address needs operator credentials.
func statsOpen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statsAccess decides whether r may read /stats and /metrics on the HTTP
// listener bound to addr: it returns 0, or the HTTP status and message to
// refuse with (401 without or with wrong credentials, 403 for a user who is
// not an operator).
func (b *Broker) statsAccess(r *http.Request, addr string) (int, string) {
	if statsOpen(addr) {
		return 0, ""
	}
	user, password, ok := r.BasicAuth()
	if !ok {
		return http.StatusUnauthorized, "authentication required: HTTP basic auth with an operator's user id and password"
	}
	// The admin API's check: a password or a device token, and an unknown
	// user costs as much as a wrong password.
	role, err := b.checkCredentials(user, password)
	switch {
	case errors.Is(err, imqtt.ErrUnauthorized):
		ev := b.log.Info().Str("remote", r.RemoteAddr).Str("path", r.URL.Path)
		if imqtt.ValidID(user) {
			// Anything else might be a password typed in the wrong field.
			ev = ev.Str("user", user)
		}
		ev.Msg("stats refused: bad credentials")
		return http.StatusUnauthorized, "bad user name or password"
	case err != nil:
		b.log.Error().Err(err).Msg("stats: checking credentials failed")
		return http.StatusServiceUnavailable, "store unavailable"
	case role != imqtt.RoleOperator:
		return http.StatusForbidden, "user " + user + " is not an operator"
	}
	return 0, ""
}

func statsError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
