package hooks

import (
	"strconv"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/storage"
)

// Store is what the hook needs of the store.
type Store interface {
	storage.Users
	storage.Devices
	storage.Tokens
}

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
}

// refusal reasons at CONNECT, mapped to CONNACK codes in OnPacketEncode.
type refusal uint8

const (
	refuseNone refusal = iota
	refuseCredentials
	refuseClientID
	refuseWill
	refuseBusy
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
	// refusal is set when CONNECT was refused and read when the CONNACK is
	// encoded.
	refusal refusal
	// ackCode is the MQTT 5 reason code for the acknowledgement of a refused
	// publish with packet id ackPID; both are written and read on the
	// client's own goroutine (processPublish writes the ack right after
	// OnPublish returns).
	ackPID  atomic.Uint32
	ackCode atomic.Uint32
}

// Hook is imqtt's mochi hook.
type Hook struct {
	mqtt.HookBase
	o        Options
	log      zerolog.Logger
	sessions sync.Map // *mqtt.Client -> *session
}

// New returns the hook.
func New(o Options) *Hook {
	if o.MaxKeepalive == 0 {
		o.MaxKeepalive = 300
	}
	return &Hook{o: o, log: o.Log}
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "imqtt" }

// Provides implements mqtt.Hook. Called for every hook on every event: a
// switch, not a slice search.
func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
		mqtt.OnWill, mqtt.OnDisconnect, mqtt.OnPacketEncode, mqtt.OnSessionEstablished:
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
	role, token, ok := h.authenticate(user, string(pk.Connect.Password))
	if !ok {
		s.refusal = refuseCredentials
		h.log.Info().Str("user", logID(user)).Str("client", cl.ID).Str("remote", cl.Net.Remote).Str("reason", "bad credentials").Msg("connect refused")
		return false
	}
	s.role = role
	s.token = token
	owner, err := h.o.Store.BindDevice(cl.ID, user)
	if err != nil {
		s.refusal = refuseBusy
		h.log.Error().Err(err).Str("user", user).Str("client", cl.ID).Msg("connect refused: binding client id")
		return false
	}
	if owner != user {
		s.refusal = refuseClientID
		h.log.Warn().Str("user", user).Str("client", cl.ID).Str("remote", cl.Net.Remote).Str("reason", "client id bound to another user").Msg("connect refused")
		return false
	}
	if pk.Connect.WillFlag && !h.o.Topics.CanWill(pk.Connect.WillTopic) {
		s.refusal = refuseWill
		h.log.Info().Str("user", user).Str("client", cl.ID).Str("reason", "will topic not allowed").Msg("connect refused")
		return false
	}
	s.ok.Store(true)
	return true
}

// authenticate checks a password or a device token, and returns the user's
// role and the token id used ("" for a password).
func (h *Hook) authenticate(user, password string) (imqtt.Role, string, bool) {
	if !imqtt.ValidID(user) || password == "" {
		return "", "", false
	}
	if id, secret, err := auth.ParseToken(password); err == nil {
		t, err := h.o.Store.Token(id)
		if err != nil || t.User != user || !auth.CheckTokenSecret(t.Hash, secret) {
			return "", "", false
		}
		u, err := h.o.Store.User(user)
		if err != nil {
			return "", "", false
		}
		return u.Role, id, true
	}
	u, err := h.o.Store.User(user)
	if err != nil {
		auth.CheckPassword(nil, password)
		return "", "", false
	}
	if !auth.CheckPassword(u.Hash, password) {
		return "", "", false
	}
	return u.Role, "", true
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
	on := false
	h.sessions.Range(func(_, v any) bool {
		s := v.(*session)
		on = s.user == user && s.ok.Load()
		return !on
	})
	return on
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

// OnSessionEstablished logs the connection.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
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
	if _, ok := h.sessions.LoadAndDelete(cl); !ok {
		return
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
	return h.o.Topics.CanSubscribe(string(cl.Properties.Username), h.role(cl), topic)
}

// OnPublish refuses every publish that is not on an open plain topic; IM
// topics come with the relationship-chain and messaging issues.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	kind, _ := imqtt.ParsePublishTopic(pk.TopicName)
	if kind == imqtt.TopicPlain && h.o.Topics.CanPublishPlain(pk.TopicName) {
		return pk, nil
	}
	if h.o.Topics.Conformance() && kind != imqtt.TopicDollar {
		return pk, nil
	}
	return pk, h.refusePublish(cl, pk, imqtt.Errorf(imqtt.CodeNotAllowed, "publishing to %q is not allowed", pk.TopicName))
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
