package hooks

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/storage"
)

// Store is what the hook needs of the store.
type Store interface {
	storage.Users
	storage.Devices
	storage.Tokens
}

// Chat is what the hook needs of the application layer.
type Chat interface {
	Request(c chat.Caller, payload []byte) (resp []byte, op string, code imqtt.Code)
	SendDM(me, peer string, payload []byte) (chat.Result, error)
	SendGroup(me, group string, payload []byte) (chat.Result, error)
	PresenceChanged(user string, online bool) error
}

// Observer counts what the hook sees, for /stats and /metrics. Methods are
// called on hot paths: they must be cheap and safe for concurrent use.
type Observer interface {
	// Request counts a request by op ("" if unknown) and error code ("" on
	// success).
	Request(op string, code imqtt.Code)
	// Message counts a message publish: accepted (code "", duplicate for an
	// idempotent retry) or refused with code.
	Message(code imqtt.Code, duplicate bool)
	// Delivered observes the time from a message's acceptance to its
	// being written to a device that was online.
	Delivered(d time.Duration)
	// ConnectRefused counts a refused CONNECT by reason.
	ConnectRefused(reason string)
	// Limited counts a refusal by an abuse limit (the Limit* names).
	Limited(limit string)
}

type nopObserver struct{}

func (nopObserver) Request(string, imqtt.Code)   {}
func (nopObserver) Message(imqtt.Code, bool)     {}
func (nopObserver) Delivered(time.Duration)      {}
func (nopObserver) ConnectRefused(reason string) {}
func (nopObserver) Limited(string)               {}

// Options configure the hook.
type Options struct {
	Server *mqtt.Server
	Store  Store
	Topics *acl.Topics
	Log    zerolog.Logger
	// MaxKeepalive caps the keepalive (seconds); a client asking for 0 or
	// more gets this value.
	MaxKeepalive uint16
	// MaxPacketSize is advertised to MQTT 5 clients in CONNACK.
	MaxPacketSize uint32
	// Streams is where devices' deliveries are read from.
	Streams storage.Streams
	// BacklogMaxEntries and BacklogMaxAge bound what a returning device
	// gets (0: unbounded).
	BacklogMaxEntries int
	BacklogMaxAge     time.Duration
	// SubscribeGrace is how long after a SUBSCRIBE delivery waits at a
	// backlog entry no subscription of the device matches (0: it passes
	// it over at once).
	SubscribeGrace time.Duration
	// Observer counts events; nil counts nothing.
	Observer Observer
	// Limits are the abuse limits.
	Limits Limits
}

// refusal reasons at CONNECT, mapped to CONNACK codes in OnPacketEncode.
type refusal uint8

const (
	refuseNone refusal = iota
	refuseCredentials
	refuseClientID
	refuseWill
	refuseBusy
	refuseLimit
	refuseFull
)

// session is what the hook knows of one connection.
type session struct {
	user string
	role imqtt.Role
	// token is the id of the device token the client authenticated with,
	// "" for a password.
	token string
	// ok is set once the connection is authenticated.
	ok atomic.Bool
	// hash is the password hash the connection was checked against, to
	// notice a password change or removal during the check.
	hash []byte
	// refusal is set when CONNECT was refused and read when the CONNACK is
	// encoded.
	refusal refusal
	// ackCode is the MQTT 5 reason code for the acknowledgement of a refused
	// publish with packet id ackPID; both are written and read on the
	// client's own goroutine (processPublish writes the ack right after
	// OnPublish returns).
	ackPID  atomic.Uint32
	ackCode atomic.Uint32
	// dev delivers the client's stream once it is connected.
	dev *device
	// takeover is set when the connection took over another of the same
	// client id, which is no presence change.
	takeover bool
}

// Hook is imqtt's mochi hook.
type Hook struct {
	mqtt.HookBase
	o        Options
	log      zerolog.Logger
	chat     Chat
	sessions sync.Map // *mqtt.Client -> *session

	// devices indexes connected devices by user, for delivery.
	devMu   sync.RWMutex
	devices map[string]map[*device]struct{}

	// cursors holds each device's latest acknowledged position
	// (clientID -> *atomic.Uint64); dirty those not yet saved.
	cursors sync.Map
	dirtyMu sync.Mutex
	dirty   map[string]uint64

	msgLimit *rateLimiter
	reqLimit *rateLimiter

	stop         chan struct{}
	stopped      chan struct{}
	stopOnce     sync.Once
	presenceQ    chan string
	presenceDone chan struct{}
}

// New returns the hook. SetChat must be called before the server serves.
func New(o Options) *Hook {
	if o.MaxKeepalive == 0 {
		o.MaxKeepalive = 300
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	h := &Hook{o: o, log: o.Log, devices: map[string]map[*device]struct{}{}, dirty: map[string]uint64{},
		stop: make(chan struct{}), stopped: make(chan struct{}),
		msgLimit: newRateLimiter(o.Limits.MessagesPerSecond), reqLimit: newRateLimiter(o.Limits.RequestsPerSecond)}
	h.presenceQ = make(chan string, 1024)
	h.presenceDone = make(chan struct{})
	go h.cursorFlusher(h.stop, h.stopped)
	go h.presenceWorker()
	return h
}

// SetChat gives the hook its application layer (which in turn notifies the
// hook, hence the two steps).
func (h *Hook) SetChat(c Chat) { h.chat = c }

// Stop implements mqtt.Hook: mochi calls it on Close, after the clients are
// gone. It saves the delivery cursors.
func (h *Hook) Stop() error {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.stopped
	<-h.presenceDone
	return nil
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "imqtt" }

// Provides implements mqtt.Hook. Called for every hook on every event: a
// switch, not a slice search.
func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnSubscribe,
		mqtt.OnWill, mqtt.OnDisconnect, mqtt.OnPacketEncode, mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnPacketSent,
		mqtt.OnPacketRead:
		return true
	}
	return false
}

func (h *Hook) session(cl *mqtt.Client) *session {
	if s, ok := h.sessions.Load(cl); ok {
		return s.(*session)
	}
	return nil
}

// OnConnect clamps the keepalive and turns off outbound topic aliases, which
// mochi keeps across reconnects with an empty topic (a resend bug).
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.State.Keepalive == 0 || cl.State.Keepalive > h.o.MaxKeepalive {
		cl.State.Keepalive = h.o.MaxKeepalive
		cl.State.ServerKeepalive = true
	}
	cl.Properties.Props.TopicAliasMaximum = 0
	cl.State.TopicAliases.Outbound = mqtt.NewOutboundTopicAliases(0)
	return nil
}

// OnConnectAuthenticate checks credentials, binds the client id and checks
// the will. The CONNACK code of a refusal is set in OnPacketEncode.
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	s := &session{user: user}
	h.sessions.Store(cl, s)
	if max := h.o.Limits.MaxClients; max > 0 && atomic.LoadInt64(&h.o.Server.Info.ClientsConnected) >= max {
		s.refusal = refuseFull
		h.o.Observer.Limited(LimitClients)
		h.log.Info().Str("client", cl.ID).Str("remote", cl.Net.Remote).Str("reason", "max_clients").Msg("connect refused")
		return false
	}
	if h.o.Topics.Conformance() {
		// Anonymous clients and any client id; credentials that are given
		// still decide the role ($SYS for operators).
		if pk.Connect.WillFlag && !h.o.Topics.CanWill(pk.Connect.WillTopic) {
			s.refusal = refuseWill
			h.o.Observer.ConnectRefused("will")
			return false
		}
		if role, _, _, ok := h.authenticate(user, string(pk.Connect.Password)); ok {
			s.role = role
		}
		s.ok.Store(true)
		return true
	}
	role, token, hash, ok := h.authenticate(user, string(pk.Connect.Password))
	if !ok {
		s.refusal = refuseCredentials
		h.o.Observer.ConnectRefused("credentials")
		h.log.Info().Str("user", logID(user)).Str("client", cl.ID).Str("remote", cl.Net.Remote).Str("reason", "bad credentials").Msg("connect refused")
		return false
	}
	s.role = role
	s.token = token
	s.hash = hash
	owner, err := h.o.Store.BindDevice(cl.ID, user)
	if err != nil {
		s.refusal = refuseBusy
		h.o.Observer.ConnectRefused("store")
		h.log.Error().Err(err).Str("user", user).Str("client", cl.ID).Msg("connect refused: binding client id")
		return false
	}
	if owner != user {
		s.refusal = refuseClientID
		h.o.Observer.ConnectRefused("client_id")
		h.log.Warn().Str("user", user).Str("client", cl.ID).Str("remote", cl.Net.Remote).Str("reason", "client id bound to another user").Msg("connect refused")
		return false
	}
	if max := h.o.Limits.ConnectionsPerUser; max > 0 && h.connectionsOf(user, cl.ID) >= max {
		s.refusal = refuseLimit
		h.o.Observer.Limited(LimitConnections)
		h.log.Info().Str("user", user).Str("client", cl.ID).Str("reason", "connections_per_user").Msg("connect refused")
		return false
	}
	if pk.Connect.WillFlag && !h.o.Topics.CanWill(pk.Connect.WillTopic) {
		s.refusal = refuseWill
		h.o.Observer.ConnectRefused("will")
		h.log.Info().Str("user", user).Str("client", cl.ID).Str("reason", "will topic not allowed").Msg("connect refused")
		return false
	}
	s.ok.Store(true)
	return true
}

// authenticate checks a password or a device token, and returns the user's
// role, the token id used ("" for a password) and the password hash it was
// checked against.
func (h *Hook) authenticate(user, password string) (imqtt.Role, string, []byte, bool) {
	if !imqtt.ValidID(user) || password == "" {
		return "", "", nil, false
	}
	if id, secret, err := auth.ParseToken(password); err == nil {
		t, err := h.o.Store.Token(id)
		if err != nil || t.User != user || !auth.CheckTokenSecret(t.Hash, secret) {
			return "", "", nil, false
		}
		u, err := h.o.Store.User(user)
		if err != nil {
			return "", "", nil, false
		}
		return u.Role, id, u.Hash, true
	}
	u, err := h.o.Store.User(user)
	if err != nil {
		auth.CheckPassword(nil, password)
		return "", "", nil, false
	}
	if !auth.CheckPassword(u.Hash, password) {
		return "", "", nil, false
	}
	return u.Role, "", u.Hash, true
}

// stillValid re-reads what a connection authenticated with: a user removed,
// a password changed or a token revoked while the (slow) check ran must not
// leave a connection behind that Disconnect missed.
func (h *Hook) stillValid(s *session) bool {
	u, err := h.o.Store.User(s.user)
	if err != nil || string(u.Hash) != string(s.hash) {
		return false
	}
	if s.token != "" {
		if _, err := h.o.Store.Token(s.token); err != nil {
			return false
		}
	}
	return true
}

// Disconnect ends every connection of user, or only those that
// authenticated with token tokenID when it is not "". It returns how many
// it ended. Used when a user is removed, its password changes or a token is
// revoked.
func (h *Hook) Disconnect(user, tokenID string) int {
	n := 0
	h.sessions.Range(func(k, v any) bool {
		cl, s := k.(*mqtt.Client), v.(*session)
		if s.user == user && s.ok.Load() && (tokenID == "" || s.token == tokenID) {
			_ = h.o.Server.DisconnectClient(cl, packets.ErrNotAuthorized)
			cl.Stop(imqtt.ErrUnauthorized)
			n++
		}
		return true
	})
	return n
}

// Online reports whether user has at least one device online.
func (h *Hook) Online(user string) bool {
	h.devMu.RLock()
	defer h.devMu.RUnlock()
	return len(h.devices[user]) > 0
}

// DevicesOnline returns the number of authenticated connections and of
// distinct users behind them.
func (h *Hook) DevicesOnline() (devices, users int) {
	seen := map[string]bool{}
	h.sessions.Range(func(_, v any) bool {
		if s := v.(*session); s.ok.Load() {
			devices++
			seen[s.user] = true
		}
		return true
	})
	return devices, len(seen)
}

// OnSessionEstablish runs before mochi hands a taken-over session's state to
// the new connection: the old connection's device stops and withdraws its
// unacknowledged packets, which the new device replays from the cursor.
func (h *Hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if old, ok := h.o.Server.Clients.Get(cl.ID); ok && old != cl {
		h.devMu.RLock()
		var d *device
		if s := h.session(old); s != nil {
			d = s.dev
		}
		h.devMu.RUnlock()
		if d != nil {
			// A takeover is not a disconnect: no presence change.
			h.dropDevice(d)
			if s := h.session(cl); s != nil {
				s.takeover = true
			}
		}
	}
}

// OnSessionEstablished starts delivery and logs the connection.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if s := h.session(cl); s != nil && !h.o.Topics.Conformance() && !h.stillValid(s) {
		h.log.Info().Str("user", s.user).Str("client", cl.ID).Msg("credentials changed during connect; disconnecting")
		_ = h.o.Server.DisconnectClient(cl, packets.ErrNotAuthorized)
		return
	}
	if s := h.session(cl); s != nil && !h.o.Topics.Conformance() {
		d := h.newDevice(cl, s.user)
		h.devMu.Lock()
		s.dev = d
		m := h.devices[s.user]
		if m == nil {
			m = map[*device]struct{}{}
			h.devices[s.user] = m
		}
		m[d] = struct{}{}
		first := len(m) == 1 && !s.takeover
		h.devMu.Unlock()
		if first {
			h.presence(s.user)
		}
		// A resumed session brings its subscriptions along: delivery
		// starts now. Otherwise it starts with the first SUBACK.
		if d.setSubs() > 0 {
			d.start()
		}
	}
	h.log.Info().Str("user", string(cl.Properties.Username)).Str("client", cl.ID).Str("remote", cl.Net.Remote).
		Str("listener", cl.Net.Listener).Uint8("protocol", cl.Properties.ProtocolVersion).Msg("connected")
}

// OnDisconnect forgets the connection.
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.ClientGone(cl, err)
}

// ClientGone is OnDisconnect for a connection whose goroutine died without
// mochi calling OnDisconnect (a recovered panic).
func (h *Hook) ClientGone(cl *mqtt.Client, err error) {
	v, ok := h.sessions.LoadAndDelete(cl)
	if !ok {
		return
	}
	h.devMu.Lock()
	dev := v.(*session).dev
	h.devMu.Unlock()
	if dev != nil && h.dropDevice(dev) {
		h.presence(dev.user)
	}
	ev := h.log.Info().Str("user", string(cl.Properties.Username)).Str("client", cl.ID).Str("remote", cl.Net.Remote)
	if cl.IsTakenOver() {
		ev = ev.Str("reason", "taken over")
	} else if err != nil {
		ev = ev.Str("reason", err.Error())
	} else {
		ev = ev.Str("reason", "client disconnected")
	}
	ev.Msg("disconnected")
}

// dropDevice stops a device's delivery and unindexes it. It reports
// whether that took the user's last device away.
func (h *Hook) dropDevice(d *device) (last bool) {
	d.close()
	h.forgetCursor(d.id)
	h.devMu.Lock()
	defer h.devMu.Unlock()
	m := h.devices[d.user]
	if _, ok := m[d]; !ok {
		return false
	}
	delete(m, d)
	if len(m) == 0 {
		delete(h.devices, d.user)
		return true
	}
	return false
}

// presence queues a check of user's presence for the presence worker,
// apart from the connection's goroutine: a connect or disconnect must not
// wait on other clients' sockets.
func (h *Hook) presence(user string) {
	if h.chat == nil {
		return
	}
	select {
	case h.presenceQ <- user:
	case <-h.stop:
	}
}

// presenceWorker tells friends about presence changes, one at a time and
// in order. It sends a user's state as it is when the change is processed,
// and only when it differs from what it last sent: a device that flaps
// fast cannot leave friends with a stale "online".
func (h *Hook) presenceWorker() {
	defer close(h.presenceDone)
	sent := map[string]bool{} // users last announced online
	for {
		select {
		case <-h.stop:
			return
		case user := <-h.presenceQ:
			online := h.Online(user)
			if sent[user] == online {
				continue
			}
			if online {
				sent[user] = true
			} else {
				delete(sent, user)
			}
			if err := h.chat.PresenceChanged(user, online); err != nil {
				h.log.Error().Err(err).Str("user", user).Msg("presence update failed")
			}
		}
	}
}

// device returns the delivering device of a client, or nil.
func (h *Hook) device(cl *mqtt.Client) *device {
	s := h.session(cl)
	if s == nil {
		return nil
	}
	h.devMu.RLock()
	defer h.devMu.RUnlock()
	return s.dev
}

// Appended implements chat.Notifier: the devices of users have new entries.
func (h *Hook) Appended(users ...string) {
	var ds []*device
	h.devMu.RLock()
	for _, u := range users {
		for d := range h.devices[u] {
			ds = append(ds, d)
		}
	}
	h.devMu.RUnlock()
	for _, d := range ds {
		d.kick()
	}
}

// Transient implements chat.Notifier: an unstored event, at QoS 0, to the
// online devices of user that subscribed to their event topic.
func (h *Hook) Transient(user string, payload []byte) {
	topic := imqtt.InboxEvents(user)
	h.devMu.RLock()
	var ds []*device
	for d := range h.devices[user] {
		ds = append(ds, d)
	}
	h.devMu.RUnlock()
	for _, d := range ds {
		d.mu.Lock()
		subs := d.subs
		d.mu.Unlock()
		if qosFor(subs, topic) >= 0 {
			_ = d.cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: payload})
		}
	}
}

// respond sends a response to the one device that asked, at QoS 0, if it
// subscribed to its res topic. Responses are not stored.
func (h *Hook) respond(cl *mqtt.Client, user string, payload []byte) {
	d := h.device(cl)
	if d == nil {
		return
	}
	topic := imqtt.InboxRes(user)
	d.mu.Lock()
	subs := d.subs
	d.mu.Unlock()
	if qosFor(subs, topic) < 0 {
		return
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: payload}
	if cl.Properties.ProtocolVersion == 5 {
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = 1, true
	}
	_ = cl.WritePacket(pk)
}

// OnSubscribed refreshes the device's inbox subscriptions; delivery starts
// once the SUBACK is out (OnPacketSent).
func (h *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if d := h.device(cl); d != nil {
		d.unpark()
		d.setSubs()
		d.hold()
	}
}

// OnUnsubscribed refreshes the device's inbox subscriptions.
func (h *Hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if d := h.device(cl); d != nil {
		d.unpark()
		d.setSubs()
	}
}

// OnPacketSent starts delivery after a SUBACK, so that no message reaches
// the client before the acknowledgement of its subscription.
func (h *Hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	if pk.FixedHeader.Type == packets.Suback {
		if d := h.device(cl); d != nil {
			d.start()
		}
	}
}

// refusedTopicMarker prefixes a publish topic starting with "$": mochi
// drops those before any hook runs, without an acknowledgement, so
// OnPacketRead renames them for OnPublish to refuse properly.
const refusedTopicMarker = "imqtt-refused-topic/"

// tooLargeMarker prefixes the topic of a stand-in for a publish too large
// to read (see TooLargeTopic).
const tooLargeMarker = "imqtt-too-large/"

// TooLargeTopic is the topic under which a listener hands mochi a stand-in
// for a publish to topic that was over the maximum packet size: same packet
// id, empty payload. OnPublish refuses it with too_large, so an MQTT 3.1.1
// client, which cannot be told the maximum, gets an acknowledgement and an
// error instead of a dropped connection it would retry into for ever.
func TooLargeTopic(topic string) string { return tooLargeMarker + topic }

// OnPacketRead sees every packet a client sends, before mochi acts on it.
// A PUBACK from the client acknowledges one of our deliveries: it is taken
// here, on the read path, because OnQosComplete also fires for the
// acknowledgements mochi sends for the client's own publishes, whose packet
// ids are another number space.
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback:
		if d := h.device(cl); d != nil {
			d.ack(pk.PacketID)
		}
	case packets.Subscribe, packets.Unsubscribe:
		// mochi refuses a SUBSCRIBE (0x91) or UNSUBSCRIBE whose packet id
		// is in its inflight map, though ids of the two directions are
		// unrelated in MQTT; our deliveries live there. The delivery with
		// that id steps out until the request is processed.
		if d := h.device(cl); d != nil {
			d.park(pk.PacketID)
		}
	case packets.Publish:
		if strings.HasPrefix(pk.TopicName, "$") {
			pk.TopicName = refusedTopicMarker + pk.TopicName
		}
	}
	return pk, nil
}

// role returns the role of a client's user. Offline persistent sessions
// (mochi still runs the read check for them) fall back to the store.
func (h *Hook) role(cl *mqtt.Client) imqtt.Role {
	if s := h.session(cl); s != nil {
		return s.role
	}
	if u, err := h.o.Store.User(string(cl.Properties.Username)); err == nil {
		return u.Role
	}
	return imqtt.RoleUser
}

// OnACLCheck judges topic structure. Writes are always let through to
// OnPublish, which refuses with an acknowledgement and an error on res: a
// refused write here would disconnect an MQTT 3.1.1 client.
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	if strings.HasPrefix(topic, limitMarker) {
		return false
	}
	return h.o.Topics.CanSubscribe(string(cl.Properties.Username), h.role(cl), topic)
}

// OnPublish carries out IM publishes (messages and requests) and lets
// through plain publishes on open topics. Everything else is refused with an
// acknowledgement and an error on the sender's res topic. IM publishes are
// never routed by mochi (CodeSuccessIgnore): delivery is ours, from the
// store, so mochi neither queues nor retains them.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	user := string(cl.Properties.Username)
	if _, ok := strings.CutPrefix(pk.TopicName, tooLargeMarker); ok {
		return pk, h.refuseMessage(cl, pk, "", imqtt.Errorf(imqtt.CodeTooLarge, "the packet is over the maximum packet size of %d bytes", h.o.MaxPacketSize))
	}
	if t, ok := strings.CutPrefix(pk.TopicName, refusedTopicMarker); ok {
		return pk, h.refuseMessage(cl, pk, h.payloadID(pk.Payload), imqtt.Errorf(imqtt.CodeNotAllowed, "publishing to %q is not allowed", t))
	}
	kind, target := imqtt.ParsePublishTopic(pk.TopicName)
	if h.o.Topics.Conformance() {
		// Plain MQTT for test suites: no IM rules, deny_topics still hold.
		if kind != imqtt.TopicDollar && h.o.Topics.CanPublishPlain(pk.TopicName) {
			return pk, nil
		}
		return pk, h.refusePublish(cl, pk, imqtt.Errorf(imqtt.CodeNotAllowed, "publishing to %q is not allowed", pk.TopicName))
	}
	switch kind {
	case imqtt.TopicRequest:
		h.request(cl, user, pk.Payload)
		return pk, packets.CodeSuccessIgnore
	case imqtt.TopicDM, imqtt.TopicGroup:
		if !h.msgLimit.allow(user, time.Now()) {
			h.o.Observer.Limited(LimitMessages)
			in, _ := imqtt.DecodeMessage(pk.Payload, len(pk.Payload))
			return pk, h.refuseMessage(cl, pk, in.ID, imqtt.Errorf(imqtt.CodeRateLimited, "over %v messages a second", h.o.Limits.MessagesPerSecond))
		}
		send := h.chat.SendDM
		if kind == imqtt.TopicGroup {
			send = h.chat.SendGroup
		}
		res, err := send(user, target, pk.Payload)
		if err != nil {
			return pk, h.refuseMessage(cl, pk, res.ID, err)
		}
		h.o.Observer.Message("", res.Duplicate)
		return pk, packets.CodeSuccessIgnore
	case imqtt.TopicPlain:
		if h.o.Topics.CanPublishPlain(pk.TopicName) {
			return pk, nil
		}
	}
	err := imqtt.Errorf(imqtt.CodeNotAllowed, "publishing to %q is not allowed", pk.TopicName)
	return pk, h.refuseMessage(cl, pk, h.payloadID(pk.Payload), err)
}

// payloadID returns the id of a message payload, if it has a valid one, for
// echoing in an error.
func (h *Hook) payloadID(payload []byte) string {
	in, _ := imqtt.DecodeMessage(payload, len(payload))
	return in.ID
}

// request carries out a request and answers the device that made it.
func (h *Hook) request(cl *mqtt.Client, user string, payload []byte) {
	if !h.reqLimit.allow(user, time.Now()) {
		h.o.Observer.Limited(LimitRequests)
		r, _ := imqtt.DecodeRequest(payload)
		h.o.Observer.Request(r.Op, imqtt.CodeRateLimited)
		err := imqtt.Errorf(imqtt.CodeRateLimited, "over %v requests a second", h.o.Limits.RequestsPerSecond)
		h.respond(cl, user, imqtt.ErrResponse(r.Rid, "", err))
		return
	}
	resp, op, code := h.chat.Request(chat.Caller{User: user, ClientID: cl.ID}, payload)
	h.o.Observer.Request(op, code)
	if code != "" {
		h.log.Info().Str("user", user).Str("client", cl.ID).Str("op", op).Str("code", string(code)).Msg("request refused")
	}
	h.respond(cl, user, resp)
}

// refuseMessage refuses a publish and tells the sending device why.
func (h *Hook) refuseMessage(cl *mqtt.Client, pk packets.Packet, id string, err error) error {
	h.o.Observer.Message(imqtt.ErrorCode(err), false)
	h.respond(cl, string(cl.Properties.Username), imqtt.ErrResponse("", id, err))
	if imqtt.ErrorCode(err) == imqtt.CodeInternal {
		h.log.Error().Err(err).Str("user", string(cl.Properties.Username)).Str("client", cl.ID).Msg("storing a message failed")
		if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			// MQTT 3.1.1 has no negative acknowledgement, and a plain
			// PUBACK would tell the client a message nothing stored is
			// safe. No ack, and a closed connection: the client sends it
			// again when it reconnects.
			cl.Stop(err)
			return packets.ErrRejectPacket
		}
	}
	return h.refusePublish(cl, pk, err)
}

// refusePublish arranges the acknowledgement of a refused publish (MQTT 5
// gets the reason code) and returns the error that makes mochi ack and drop.
func (h *Hook) refusePublish(cl *mqtt.Client, pk packets.Packet, err error) error {
	code := imqtt.ErrorCode(err)
	if s := h.session(cl); s != nil && pk.FixedHeader.Qos > 0 {
		s.ackCode.Store(uint32(code.ReasonCode()))
		s.ackPID.Store(uint32(pk.PacketID))
	}
	h.log.Info().Str("user", string(cl.Properties.Username)).Str("client", cl.ID).Str("op", "publish").
		Str("code", string(code)).Msg("refused")
	return packets.CodeSuccessIgnore
}

// OnWill neuters a will whose topic is not allowed. CONNECT refuses those
// already; this guards against a will changed by another path.
func (h *Hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if !h.o.Topics.CanWill(will.TopicName) {
		return mqtt.Will{}, nil
	}
	return will, nil
}

// OnPacketEncode fixes up outbound packets: CONNACK codes of refusals (mochi
// knows only "bad user name or password", and maps it to the wrong 3.1.1
// code), the maximum packet size advertised to MQTT 5 clients, and PUBACK
// reason codes (mochi sends 0x01 for a QoS 1 success, which MQTT 5 does not
// define; refusals carry the code of PROTOCOL.md section 5).
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Connack:
		return h.encodeConnack(cl, pk)
	case packets.Puback, packets.Pubrec:
		if cl.Properties.ProtocolVersion != 5 {
			return pk
		}
		if s := h.session(cl); s != nil && s.ackPID.Load() == uint32(pk.PacketID) && s.ackCode.Load() != 0 {
			pk.ReasonCode = byte(s.ackCode.Swap(0))
			s.ackPID.Store(0)
			if pk.FixedHeader.Type == packets.Pubrec {
				// A PUBREC with an error code ends the QoS 2 exchange: no
				// PUBREL follows, so mochi's inflight entry and receive
				// quota for it must be given back here.
				if cl.State.Inflight.Delete(pk.PacketID) {
					atomic.AddInt64(&h.o.Server.Info.Inflight, -1)
				}
				cl.State.Inflight.IncreaseReceiveQuota()
			}
			return pk
		}
		if pk.ReasonCode == packets.CodeGrantedQos1.Code {
			pk.ReasonCode = packets.CodeSuccess.Code
		}
	}
	return pk
}

func (h *Hook) encodeConnack(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	v5 := cl.Properties.ProtocolVersion == 5
	if pk.ReasonCode == packets.CodeSuccess.Code {
		if v5 && h.o.MaxPacketSize > 0 {
			pk.Properties.MaximumPacketSize = h.o.MaxPacketSize
		}
		return pk
	}
	var r refusal
	if s := h.session(cl); s != nil {
		r = s.refusal
		h.sessions.Delete(cl)
	}
	codes := map[refusal][2]byte{ // {3.1.1 return code, 5.0 reason}
		refuseCredentials: {4, 0x86},
		refuseClientID:    {2, 0x85},
		refuseWill:        {5, 0x87},
		refuseBusy:        {3, 0x88},
		refuseLimit:       {3, 0x97},
		refuseFull:        {3, 0x89}, // server unavailable / server busy, as mochi answers
	}
	if c, ok := codes[r]; ok {
		if v5 {
			pk.ReasonCode = c[1]
		} else {
			pk.ReasonCode = c[0]
		}
		return pk
	}
	// mochi refuses a 3.1.1 CONNECT with an empty client id and clean
	// session false with 0x80, which 3.1.1 does not define: it is
	// "identifier rejected" there.
	if !v5 && pk.ReasonCode > 5 {
		pk.ReasonCode = 2
	}
	return pk
}

// logID returns a user id fit for a log line: an invalid one (it may be
// anything a client sent) is replaced by its length.
func logID(user string) string {
	if imqtt.ValidID(user) {
		return user
	}
	return "(invalid, " + strconv.Itoa(len(user)) + " bytes)"
}
