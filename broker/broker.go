package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/hooks"
	"github.com/imqtt/imqtt/storage/bolt"
)

// packetOverhead is what an MQTT packet may add to an IM payload: fixed
// header, topic, packet id and MQTT 5 properties.
const packetOverhead = 4096

// maxPacketSize is the largest MQTT packet read; a larger one ends the
// connection before it is read into memory (mochi allows nothing else).
// It leaves room above max_payload (twice it, and at least 64 KiB more)
// so that an oversized IM payload is read and refused with too_large,
// as PROTOCOL.md section 3 says, rather than cutting the connection;
// only packets far beyond the limit hit the hard cap.
func maxPacketSize(maxPayload int) int {
	return maxPayload + max(maxPayload, 64<<10) + packetOverhead
}

// Broker is a running imqtt.
type Broker struct {
	cfg    Config
	log    zerolog.Logger
	db     *bolt.DB
	server *mqtt.Server
	hook   *hooks.Hook
	chat   *chat.Service
	guard  *guard
	obs    *observer

	mu      sync.Mutex
	addrs   map[string]string
	httpSrv *http.Server
	httpLn  net.Listener
	started bool
	closed  bool

	janitorStop chan struct{}
	janitorDone chan struct{}
}

// janitor prunes delivery streams of entries no device will get, a slice of
// users at a time.
func (b *Broker) janitor() {
	defer close(b.janitorDone)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-b.janitorStop:
			return
		case <-t.C:
			n, err := b.db.PruneStreams(b.cfg.Backlog.MaxEntries, b.cfg.Backlog.MaxAge, time.Now(), 1000)
			if err != nil {
				b.log.Error().Err(err).Msg("pruning delivery streams failed")
			} else if n > 0 {
				b.log.Debug().Int("entries", n).Msg("pruned delivery streams")
			}
		}
	}
}

// New validates cfg, opens the store and builds the server. It binds no
// listener: Start does.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := NewLogger(cfg.Log, cfg.LogWriter)
	topics, err := acl.NewTopics(cfg.OpenTopics, cfg.DenyTopics, cfg.Conformance)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	db, err := bolt.OpenDir(cfg.Data, bolt.Options{})
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, log: log, db: db, addrs: map[string]string{}}
	b.obs = newObserver(b.Stats, log)
	db.ObserveCommits(b.obs.commitDone)

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(maxPacketSize(cfg.MaxPayload))
	// IM deliveries are written by the hook, not queued by mochi: its
	// per-client queue carries only plain-topic and $SYS traffic. mochi
	// drops a QoS 1 publish (after acknowledging it to the sender) when the
	// recipient's queue is full, so it stays deep enough for bursts on
	// open topics (8 KiB a connection; mochi's default is 64 KiB).
	caps.MaximumClientWritesPending = 1024
	caps.MaximumInflight = 1024
	caps.ReceiveMaximum = 256
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600
	// Our store is the offline queue; mochi's inflight expiry would only
	// add a property to every MQTT 5 publish.
	caps.MaximumMessageExpiryInterval = 0
	// max_clients is enforced (and counted) by the hook; mochi's own check
	// runs before any hook.
	caps.MaximumClients = math.MaxInt64
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.MaximumQos = 2

	slogger := newSlog(log.With().Str("component", "mochi").Logger())
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slogger,
		SysTopicResendInterval: 10,
		// MQTT packets of idle devices are small; 1 KiB instead of 2
		// per connection.
		ClientNetReadBufferSize: 1024,
	})
	b.hook = hooks.New(hooks.Options{
		Server:            b.server,
		Store:             db,
		Topics:            topics,
		Log:               log,
		MaxKeepalive:      cfg.MaxKeepalive,
		MaxPacketSize:     caps.MaximumPacketSize,
		Streams:           db,
		BacklogMaxEntries: cfg.Backlog.MaxEntries,
		BacklogMaxAge:     cfg.Backlog.MaxAge,
		SubscribeGrace:    cfg.SubscribeGrace,
		Observer:          b.obs,
		Limits: hooks.Limits{
			MaxClients:             cfg.MaxClients,
			MessagesPerSecond:      cfg.Limits.MessagesPerSecond,
			RequestsPerSecond:      cfg.Limits.RequestsPerSecond,
			ConnectionsPerUser:     cfg.Limits.ConnectionsPerUser,
			SubscriptionsPerClient: cfg.Limits.SubscriptionsPerClient,
		},
	})
	policy, _ := acl.ParseDMPolicy(cfg.DMPolicy)
	b.chat = chat.New(chat.Options{Store: db, Notifier: b.hook, DMPolicy: policy, MaxPayload: cfg.MaxPayload,
		MaxGroupMembers: cfg.MaxGroupMembers})
	b.hook.SetChat(b.chat)
	if err := b.server.AddHook(b.hook, nil); err != nil {
		db.Close()
		return nil, fmt.Errorf("add hook: %w", err)
	}
	b.guard = &guard{connectTimeout: cfg.ConnectTimeout, log: slogger, onPanic: b.recovered, maxPacket: maxPacketSize(cfg.MaxPayload)}
	return b, nil
}

// recovered cleans up after a connection whose goroutine panicked: mochi's
// deferred clean-up ran, but OnDisconnect and the session expiry did not.
func (b *Broker) recovered(conn net.Conn, r any) {
	b.log.Error().Str("remote", conn.RemoteAddr().String()).Str("panic", fmt.Sprint(r)).Str("stack", stack()).
		Msg("connection goroutine panicked; connection closed, broker serving on")
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Conn != conn {
			continue
		}
		b.hook.ClientGone(cl, fmt.Errorf("panic: %v", r))
		if cur, ok := b.server.Clients.Get(cl.ID); ok && cur == cl {
			b.server.UnsubscribeClient(cl)
			b.server.Clients.Delete(cl.ID)
		}
	}
}

// closeListenerClients disconnects a listener's clients at shutdown. It
// takes mochi's clients lock once (GetAll), unlike mochi's own, which can
// deadlock (mochi #488).
func (b *Broker) closeListenerClients(id string) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// Store returns the broker's store.
func (b *Broker) Store() *bolt.DB { return b.db }

// Logger returns the broker's logger.
func (b *Broker) Logger() zerolog.Logger { return b.log }

// Addr returns the bound address of a listener ("mqtt", "ws", "http"), or ""
// if it is off or not started.
func (b *Broker) Addr(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrs[name]
}

func (b *Broker) tlsConfig() (*tls.Config, error) {
	if b.cfg.TLS.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(b.cfg.TLS.Cert, b.cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Start binds the enabled listeners and serves. On error nothing is left
// bound.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("broker: already started or closed")
	}
	tcfg, err := b.tlsConfig()
	if err != nil {
		return err
	}
	var bound []net.Listener
	fail := func(err error) error {
		for _, ln := range bound {
			ln.Close()
		}
		return err
	}
	var mqttLn, wsLn, httpLn net.Listener
	if a := b.cfg.Listen.MQTT; !Disabled(a) {
		if mqttLn, err = tlsListen(a, tcfg); err != nil {
			return fail(fmt.Errorf("listen mqtt %s: %w", a, err))
		}
		bound = append(bound, mqttLn)
	}
	if a := b.cfg.Listen.WS; !Disabled(a) {
		if wsLn, err = tlsListen(a, tcfg); err != nil {
			return fail(fmt.Errorf("listen ws %s: %w", a, err))
		}
		bound = append(bound, wsLn)
	}
	if a := b.cfg.Listen.HTTP; !Disabled(a) {
		if httpLn, err = net.Listen("tcp", a); err != nil {
			return fail(fmt.Errorf("listen http %s: %w", a, err))
		}
		bound = append(bound, httpLn)
	}
	if mqttLn != nil {
		if err := b.server.AddListener(&tcpListener{id: "mqtt", ln: mqttLn, guard: b.guard, closeClients: b.closeListenerClients}); err != nil {
			return fail(err)
		}
		b.addrs["mqtt"] = mqttLn.Addr().String()
	}
	if wsLn != nil {
		if err := b.server.AddListener(&wsListener{id: "ws", ln: wsLn, guard: b.guard,
			closeClients: b.closeListenerClients}); err != nil {
			return fail(err)
		}
		b.addrs["ws"] = wsLn.Addr().String()
	}
	if err := b.server.Serve(); err != nil {
		return fail(fmt.Errorf("serve: %w", err))
	}
	if httpLn != nil {
		b.httpLn = httpLn
		b.httpSrv = &http.Server{Handler: b.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		b.addrs["http"] = httpLn.Addr().String()
		go func() { _ = b.httpSrv.Serve(httpLn) }()
	}
	b.started = true
	b.janitorStop = make(chan struct{})
	b.janitorDone = make(chan struct{})
	go b.janitor()
	b.log.Info().Str("mqtt", b.addrs["mqtt"]).Str("ws", b.addrs["ws"]).Str("http", b.addrs["http"]).
		Str("store", b.db.Path()).Msg("imqtt serving")
	return nil
}

// Close stops the listeners, disconnects every client and closes the store.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	var errs []error
	if b.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		errs = append(errs, b.httpSrv.Shutdown(ctx))
		cancel()
	}
	if started {
		close(b.janitorStop)
		<-b.janitorDone
		errs = append(errs, b.server.Close())
		// Let client goroutines finish what they were committing before
		// the store closes under them.
		done := make(chan struct{})
		go func() { b.server.Listeners.ClientsWg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			b.log.Warn().Msg("clients still running at shutdown")
		}
	}
	// mochi stops the hook on Close; a broker never started stops it here.
	errs = append(errs, b.hook.Stop())
	errs = append(errs, b.db.Close())
	b.log.Info().Msg("imqtt stopped")
	return errors.Join(errs...)
}

func (b *Broker) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := b.db.Ping(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"store unavailable"}` + "\n"))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	b.registerAdmin(mux)
	b.registerStats(mux)
	return mux
}
