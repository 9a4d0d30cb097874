package hooks

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Limits are the abuse limits of PROTOCOL.md section 8 (limits:). Zero
// values mean no limit.
type Limits struct {
	// MaxClients caps authenticated connections broker-wide. The hook
	// enforces it rather than mochi, whose own check refuses before any
	// hook runs and so cannot be counted.
	MaxClients             int64
	MessagesPerSecond      float64
	RequestsPerSecond      float64
	ConnectionsPerUser     int
	SubscriptionsPerClient int
}

// Limit names, as counted by Observer.Limited.
const (
	LimitMessages      = "messages_per_second"
	LimitRequests      = "requests_per_second"
	LimitConnections   = "connections_per_user"
	LimitSubscriptions = "subscriptions_per_client"
	LimitClients       = "max_clients"
)

// limitMarker prefixes a filter refused for the subscription limit: a valid
// filter that OnACLCheck always refuses, so mochi answers it like an
// unauthorised one (PROTOCOL.md section 8).
const limitMarker = "$imqtt-over-limit/"

// rateLimiter is a token bucket per key (user): rate tokens a second, burst
// twice that.
type rateLimiter struct {
	rate    float64
	burst   float64
	buckets sync.Map // key -> *tokenBucket
}

type tokenBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	return &rateLimiter{rate: rate, burst: 2 * rate}
}

// allow takes a token for key, reporting whether there was one.
func (l *rateLimiter) allow(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	v, ok := l.buckets.Load(key)
	if !ok {
		v, _ = l.buckets.LoadOrStore(key, &tokenBucket{tokens: l.burst, last: now})
	}
	b := v.(*tokenBucket)
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forget drops buckets that have refilled, so the map does not keep every
// user that ever sent.
func (l *rateLimiter) forget(now time.Time) {
	if l == nil {
		return
	}
	full := time.Duration(l.burst/l.rate*float64(time.Second)) + time.Second
	l.buckets.Range(func(k, v any) bool {
		b := v.(*tokenBucket)
		b.mu.Lock()
		idle := now.Sub(b.last) > full
		b.mu.Unlock()
		if idle {
			l.buckets.Delete(k)
		}
		return true
	})
}

// OnSubscribe enforces the subscriptions-per-client limit: filters past it
// are rewritten to a marker the ACL refuses.
func (h *Hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	max := h.o.Limits.SubscriptionsPerClient
	if max <= 0 {
		return pk
	}
	have := cl.State.Subscriptions.Len()
	for i := range pk.Filters {
		f := pk.Filters[i].Filter
		if _, ok := cl.State.Subscriptions.Get(f); ok {
			continue
		}
		if have >= max {
			pk.Filters[i].Filter = limitMarker + f
			h.o.Observer.Limited(LimitSubscriptions)
			continue
		}
		have++
	}
	return pk
}

// connectionsOf counts user's online devices other than clientID (a
// takeover replaces that one).
func (h *Hook) connectionsOf(user, clientID string) int {
	h.devMu.RLock()
	defer h.devMu.RUnlock()
	n := 0
	for d := range h.devices[user] {
		if d.id != clientID {
			n++
		}
	}
	return n
}
