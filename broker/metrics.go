package broker

import (
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/hooks"
)

// Label values come only from these fixed sets, whatever clients send, so
// that no client can grow the number of series (docs/STATS.md).

// requestOps are the ops of PROTOCOL.md section 5; the last slot, "", counts
// requests whose op is unknown or that did not parse.
var requestOps = [...]string{
	"friend.request", "friend.accept", "friend.reject", "friend.remove", "friend.list",
	"block.add", "block.remove", "block.list",
	"group.create", "group.add", "group.kick", "group.leave", "group.info",
	"conv.list", "history", "read", "typing", "presence",
	"",
}

// codeLabels are the outcome labels: "ok", the error codes of PROTOCOL.md
// section 5, and "other" for a code this list does not know.
var codeLabels = [...]string{
	"ok",
	string(imqtt.CodeBadRequest), string(imqtt.CodeTooLarge), string(imqtt.CodeNoSuchUser),
	string(imqtt.CodeNoSuchGroup), string(imqtt.CodeNotFriends), string(imqtt.CodeNotAllowed),
	string(imqtt.CodeNotMember), string(imqtt.CodeNotOwner), string(imqtt.CodeRateLimited),
	string(imqtt.CodeInternal),
	"other",
}

// connectReasons are the reasons the hook refuses a CONNECT with, and ""
// for one it does not name here.
var connectReasons = [...]string{"credentials", "client_id", "will", "store", ""}

// limitNames are the abuse limits (hooks.Limit*), and "" for another.
var limitNames = [...]string{
	hooks.LimitMessages, hooks.LimitRequests, hooks.LimitConnections, hooks.LimitSubscriptions, hooks.LimitClients, "",
}

const (
	codeOK    = 0
	codeOther = len(codeLabels) - 1
)

var (
	opIndex     = indexOf(requestOps[:])
	codeIndex   = indexOf(codeLabels[:])
	reasonIndex = indexOf(connectReasons[:])
	limitIndex  = indexOf(limitNames[:])
)

func indexOf(names []string) map[string]int {
	m := make(map[string]int, len(names))
	for i, n := range names {
		m[n] = i
	}
	return m
}

// lookup returns the index of name in m, or dflt for a name not in the set.
func lookup(m map[string]int, name string, dflt int) int {
	if i, ok := m[name]; ok {
		return i
	}
	return dflt
}

func codeSlot(c imqtt.Code) int {
	if c == "" {
		return codeOK
	}
	i := lookup(codeIndex, string(c), codeOther)
	if i == codeOK {
		// "ok" is no error code: a code spelled so is unknown.
		return codeOther
	}
	return i
}

// observer implements hooks.Observer with atomic counters, which /stats
// reads and the Prometheus collector exports, and histograms for the
// latencies.
type observer struct {
	requests       [len(requestOps)][len(codeLabels)]atomic.Uint64
	accepted       atomic.Uint64
	duplicates     atomic.Uint64
	refused        [len(codeLabels)]atomic.Uint64
	connectRefused [len(connectReasons)]atomic.Uint64
	limited        [len(limitNames)]atomic.Uint64

	commit  prometheus.Histogram
	deliver prometheus.Histogram

	reg *prometheus.Registry
}

var _ hooks.Observer = (*observer)(nil)

// newObserver returns an observer whose registry exports, besides its own
// counters and histograms, the figures stats returns at each scrape.
func newObserver(stats func() (Stats, error), log zerolog.Logger) *observer {
	o := &observer{
		reg: prometheus.NewRegistry(),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "imqtt_commit_duration_seconds",
			Help: "Time each store commit (a batch of writes made durable with one fsync) took.",
			// From a fast SSD's fsync to a stalled disk.
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
		deliver: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imqtt_deliver_latency_seconds",
			Help:    "Time from a message's acceptance to its being written to a recipient device that was online.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30, 60},
		}),
	}
	o.reg.MustRegister(o.commit, o.deliver, &statsCollector{o: o, stats: stats, log: log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return o
}

// Request implements hooks.Observer.
func (o *observer) Request(op string, code imqtt.Code) {
	o.requests[lookup(opIndex, op, len(requestOps)-1)][codeSlot(code)].Add(1)
}

// Message implements hooks.Observer.
func (o *observer) Message(code imqtt.Code, duplicate bool) {
	switch {
	case code != "":
		o.refused[codeSlot(code)].Add(1)
	case duplicate:
		o.duplicates.Add(1)
	default:
		o.accepted.Add(1)
	}
}

// Delivered implements hooks.Observer.
func (o *observer) Delivered(d time.Duration) { o.deliver.Observe(d.Seconds()) }

// ConnectRefused implements hooks.Observer.
func (o *observer) ConnectRefused(reason string) {
	o.connectRefused[lookup(reasonIndex, reason, len(connectReasons)-1)].Add(1)
}

// Limited implements hooks.Observer.
func (o *observer) Limited(limit string) {
	o.limited[lookup(limitIndex, limit, len(limitNames)-1)].Add(1)
}

// commitDone observes a store commit's duration.
func (o *observer) commitDone(d time.Duration) { o.commit.Observe(d.Seconds()) }

// handler serves the registry in the Prometheus text format.
func (o *observer) handler(log zerolog.Logger) http.Handler {
	return promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{
		// A failing store must not hide the counters.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{log},
	})
}

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn().Str("component", "metrics").Msg(fmt.Sprint(v...))
}

// Latency summarises a latency histogram for /stats: p50 and p99 are
// estimated from the histogram's buckets as Prometheus' histogram_quantile
// does (linear within a bucket).
type Latency struct {
	Count uint64  `json:"count"`
	Avg   float64 `json:"avg"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
}

func summarize(h prometheus.Histogram) Latency {
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return Latency{}
	}
	hist := m.Histogram
	l := Latency{Count: hist.GetSampleCount()}
	if l.Count == 0 {
		return l
	}
	l.Avg = hist.GetSampleSum() / float64(l.Count)
	l.P50 = quantile(0.5, hist)
	l.P99 = quantile(0.99, hist)
	return l
}

// quantile estimates the q-quantile of a histogram with cumulative buckets;
// a rank beyond the last bucket gives that bucket's upper bound.
func quantile(q float64, h *dto.Histogram) float64 {
	rank := q * float64(h.GetSampleCount())
	lower, below := 0.0, uint64(0)
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), b.GetCumulativeCount()
		if math.IsInf(upper, +1) {
			break
		}
		if float64(count) >= rank {
			in := count - below
			if in == 0 {
				return upper
			}
			return lower + (upper-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = upper, count
	}
	return lower
}

// statsCollector exports, at each scrape, the figures /stats reports: the
// store's (read in one transaction), who is online, mochi's $SYS counters
// and the observer's counters.
type statsCollector struct {
	o     *observer
	stats func() (Stats, error)
	log   zerolog.Logger
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descUsers          = desc("imqtt_users", "Users, operators included.")
	descUsersOnline    = desc("imqtt_users_online", "Users with at least one device online.")
	descDevices        = desc("imqtt_devices", "Devices (client ids) bound to a user.")
	descDevicesOnline  = desc("imqtt_devices_online", "Authenticated connections.")
	descConversations  = desc("imqtt_conversations", "Groups plus DMs with at least one message.")
	descGroups         = desc("imqtt_groups", "Groups.")
	descMessages       = desc("imqtt_messages", "Messages stored, over every conversation.")
	descStreamEntries  = desc("imqtt_stream_entries", "Delivery stream entries (message references and events) stored.")
	descBacklog        = desc("imqtt_backlog", "Stream entries waiting for devices to acknowledge them, all devices together.")
	descBacklogDevices = desc("imqtt_backlog_devices", "Devices with entries waiting.")
	descOldestBacklog  = desc("imqtt_oldest_backlog_age_seconds", "Age of the oldest entry waiting for a device; 0 with no backlog.")
	descStoreBytes     = desc("imqtt_store_bytes", "Size of the store file imqtt.db.")
	descCommits        = desc("imqtt_commits_total", "Store commits made since start.")

	descRequests       = desc("imqtt_requests_total", "Requests answered, by op (\"\": unknown op or unparseable) and code (\"ok\" or the error code).", "op", "code")
	descAccepted       = desc("imqtt_messages_accepted_total", "Messages accepted and stored (idempotent retries not included).")
	descRefused        = desc("imqtt_messages_refused_total", "Message publishes refused (and publishes to topics the user may not publish to), by error code.", "code")
	descRetries        = desc("imqtt_idempotent_retries_total", "Message publishes that repeated an already stored message id and were acknowledged without storing again.")
	descConnectRefused = desc("imqtt_connect_refused_total", "CONNECTs refused, by reason.", "reason")
	descLimited        = desc("imqtt_limited_total", "Actions refused by an abuse limit, by limit.", "limit")

	descBrokerInfo            = desc("imqtt_broker_info", "The embedded MQTT server's version, as a label; always 1.", "version")
	descBrokerStart           = desc("imqtt_broker_start_time_seconds", "When the broker started, Unix seconds.")
	descBrokerUptime          = desc("imqtt_broker_uptime_seconds", "Seconds since the broker started.")
	descBrokerConnected       = desc("imqtt_broker_clients_connected", "MQTT connections open, authenticated or not.")
	descBrokerDisconnected    = desc("imqtt_broker_clients_disconnected", "Persistent MQTT sessions whose client is not connected.")
	descBrokerMaximum         = desc("imqtt_broker_clients_maximum", "Most MQTT connections open at once since start.")
	descBrokerTotal           = desc("imqtt_broker_sessions", "MQTT sessions known: connected plus disconnected persistent ones (mochi's clients_total).")
	descBrokerMsgsReceived    = desc("imqtt_broker_messages_received_total", "PUBLISH packets received.")
	descBrokerMsgsSent        = desc("imqtt_broker_messages_sent_total", "PUBLISH packets sent.")
	descBrokerMsgsDropped     = desc("imqtt_broker_messages_dropped_total", "PUBLISH packets dropped because a client's queue was full.")
	descBrokerBytesReceived   = desc("imqtt_broker_received_bytes_total", "Bytes received from MQTT clients.")
	descBrokerBytesSent       = desc("imqtt_broker_sent_bytes_total", "Bytes sent to MQTT clients.")
	descBrokerPacketsReceived = desc("imqtt_broker_packets_received_total", "MQTT packets received.")
	descBrokerPacketsSent     = desc("imqtt_broker_packets_sent_total", "MQTT packets sent.")
	descBrokerRetained        = desc("imqtt_broker_retained_messages", "Retained messages held.")
	descBrokerInflight        = desc("imqtt_broker_inflight_messages", "QoS 1 and 2 messages awaiting acknowledgement.")
	descBrokerInflightDropped = desc("imqtt_broker_inflight_dropped_total", "In-flight messages dropped (expired or over a client's limit).")
	descBrokerSubscriptions   = desc("imqtt_broker_subscriptions", "Subscriptions held.")
)

var collectorDescs = []*prometheus.Desc{
	descUsers, descUsersOnline, descDevices, descDevicesOnline, descConversations, descGroups,
	descMessages, descStreamEntries, descBacklog, descBacklogDevices, descOldestBacklog, descStoreBytes,
	descCommits, descRequests, descAccepted, descRefused, descRetries, descConnectRefused, descLimited,
	descBrokerInfo, descBrokerStart, descBrokerUptime, descBrokerConnected, descBrokerDisconnected,
	descBrokerMaximum, descBrokerTotal, descBrokerMsgsReceived, descBrokerMsgsSent, descBrokerMsgsDropped,
	descBrokerBytesReceived, descBrokerBytesSent, descBrokerPacketsReceived, descBrokerPacketsSent,
	descBrokerRetained, descBrokerInflight, descBrokerInflightDropped, descBrokerSubscriptions,
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range collectorDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.stats()
	if err != nil {
		// The counters below need no store; the store's gauges go missing
		// and the scrape logs the error.
		ch <- prometheus.NewInvalidMetric(descStoreBytes, err)
	} else {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
		}
		gauge(descUsers, float64(s.Users))
		gauge(descDevices, float64(s.Devices))
		gauge(descConversations, float64(s.Conversations))
		gauge(descGroups, float64(s.Groups))
		gauge(descMessages, float64(s.Messages))
		gauge(descStreamEntries, float64(s.StreamEntries))
		gauge(descBacklog, float64(s.Backlog))
		gauge(descBacklogDevices, float64(s.BacklogDevices))
		gauge(descOldestBacklog, s.OldestBacklogAgeSeconds)
		gauge(descStoreBytes, float64(s.StoreBytes))
	}
	// Live figures come from s when it is there, so that one scrape agrees
	// with itself; they need no store, so they are there either way.
	o := c.o
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descUsersOnline, float64(s.UsersOnline))
	gauge(descDevicesOnline, float64(s.DevicesOnline))
	counter(descCommits, uint64(s.Commits))
	for i, op := range requestOps {
		for j, code := range codeLabels {
			n := o.requests[i][j].Load()
			// Every op's success series exists from the start, so a rate
			// sees its first increase; error series appear when they occur.
			if n > 0 || j == codeOK && op != "" {
				counter(descRequests, n, op, code)
			}
		}
	}
	counter(descAccepted, o.accepted.Load())
	counter(descRetries, o.duplicates.Load())
	// Each label's known values have a series from the start; the
	// catch-all value, which should stay unused, appears when used.
	for j, code := range codeLabels {
		if n := o.refused[j].Load(); j != codeOK && (n > 0 || j != codeOther) {
			counter(descRefused, n, code)
		}
	}
	for i, r := range connectReasons {
		if n := o.connectRefused[i].Load(); n > 0 || i != len(connectReasons)-1 {
			counter(descConnectRefused, n, r)
		}
	}
	for i, l := range limitNames {
		if n := o.limited[i].Load(); n > 0 || i != len(limitNames)-1 {
			counter(descLimited, n, l)
		}
	}
	bi := s.Broker
	gauge(descBrokerInfo, 1, bi.Version)
	gauge(descBrokerStart, float64(bi.Started))
	gauge(descBrokerUptime, float64(bi.Uptime))
	gauge(descBrokerConnected, float64(bi.ClientsConnected))
	gauge(descBrokerDisconnected, float64(bi.ClientsDisconnected))
	gauge(descBrokerMaximum, float64(bi.ClientsMaximum))
	gauge(descBrokerTotal, float64(bi.ClientsTotal))
	counter(descBrokerMsgsReceived, nonNeg(bi.MessagesReceived))
	counter(descBrokerMsgsSent, nonNeg(bi.MessagesSent))
	counter(descBrokerMsgsDropped, nonNeg(bi.MessagesDropped))
	counter(descBrokerBytesReceived, nonNeg(bi.BytesReceived))
	counter(descBrokerBytesSent, nonNeg(bi.BytesSent))
	counter(descBrokerPacketsReceived, nonNeg(bi.PacketsReceived))
	counter(descBrokerPacketsSent, nonNeg(bi.PacketsSent))
	gauge(descBrokerRetained, float64(bi.Retained))
	gauge(descBrokerInflight, float64(bi.Inflight))
	counter(descBrokerInflightDropped, nonNeg(bi.InflightDropped))
	gauge(descBrokerSubscriptions, float64(bi.Subscriptions))
}

func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}
