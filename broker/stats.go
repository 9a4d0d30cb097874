package broker

import (
	"encoding/json"
	"net/http"
	"runtime"
	"time"

	"github.com/mochi-mqtt/server/v2/system"
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

// registerStats adds GET /stats and GET /metrics to mux. Both are open, as
// PROTOCOL.md section 7 lists them: they hold aggregate figures only (counts,
// sizes, latencies; no user ids, no message content). An operator who wants
// them private binds the HTTP listener to a private or loopback address.
func (b *Broker) registerStats(mux *http.ServeMux) {
	mux.HandleFunc("GET /stats", b.serveStats)
	mux.Handle("GET /metrics", b.obs.handler(b.log))
}

func (b *Broker) serveStats(w http.ResponseWriter, r *http.Request) {
	s, err := b.Stats()
	if err != nil {
		b.log.Error().Err(err).Msg("stats: reading the store failed")
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
}
