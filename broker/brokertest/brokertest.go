// Package brokertest starts a real imqtt broker in-process for tests, on
// loopback ports with a temporary store, and connects real MQTT clients to
// it: Eclipse Paho for MQTT 3.1.1 and paho.golang for MQTT 5.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/storage"
)

func init() {
	// bcrypt at cost 10 takes over a second under the race detector.
	auth.SetTestCost()
}

// Timeout bounds every wait in this package.
const Timeout = 10 * time.Second

// B is a running broker.
type B struct {
	*broker.Broker
	Dir    string
	Config broker.Config
	t      testing.TB
}

// Config returns a test configuration: loopback listeners on free ports, a
// store in dir, quiet logs.
func Config(dir string) broker.Config {
	c := broker.Default()
	c.Data = dir
	c.Listen = broker.Listen{MQTT: "127.0.0.1:0", WS: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	c.Log.Level = "warn"
	c.Log.Format = "json"
	c.LogWriter = io.Discard
	return c
}

// Start starts a broker with Config(t.TempDir()), changed by mod if not nil,
// and closes it when the test ends.
func Start(t testing.TB, mod func(*broker.Config)) *B {
	t.Helper()
	return StartIn(t, t.TempDir(), mod)
}

// StartIn is Start with a given data directory (to restart on a store).
func StartIn(t testing.TB, dir string, mod func(*broker.Config)) *B {
	t.Helper()
	c := Config(dir)
	if mod != nil {
		mod(&c)
	}
	b, err := broker.New(c)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := b.Start(); err != nil {
		b.Close()
		t.Fatalf("broker.Start: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &B{Broker: b, Dir: dir, Config: c, t: t}
}

// AddUser creates a user with a password (role "" is user).
func (b *B) AddUser(id, password string, role imqtt.Role) {
	b.t.Helper()
	if role == "" {
		role = imqtt.RoleUser
	}
	h, err := auth.HashPassword(password)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := b.Store().CreateUser(storage.User{ID: id, Role: role, Hash: h}); err != nil {
		b.t.Fatalf("add user %s: %v", id, err)
	}
}

// Users creates users with password "pw-"+id.
func (b *B) Users(ids ...string) {
	b.t.Helper()
	for _, id := range ids {
		b.AddUser(id, "pw-"+id, "")
	}
}

// Msg is a message a client received.
type Msg struct {
	Topic   string
	Payload []byte
	QoS     byte
	Dup     bool
}

// Opts are connection options.
type Opts struct {
	V5       bool
	ClientID string
	User     string
	Password string
	// Persistent asks for a session that survives the connection
	// (3.1.1 clean session false, 5.0 session expiry 1 h).
	Persistent bool
	Keepalive  uint16
	WillTopic  string
	// Addr overrides the broker's MQTT address.
	Addr string
}

// Client is a connected MQTT client of either version.
type Client struct {
	V5   bool
	ID   string
	Msgs chan Msg
	c3   mqtt3.Client
	c5   *paho.Client
	conn net.Conn
	mu   sync.Mutex
	gone chan struct{}
}

// ConnectError is a refused CONNECT with its CONNACK code.
type ConnectError struct{ Code byte }

func (e *ConnectError) Error() string { return fmt.Sprintf("connect refused: code 0x%02x", e.Code) }

// Dial connects; a refused CONNECT returns a *ConnectError.
func (b *B) Dial(o Opts) (*Client, error) {
	addr := o.Addr
	if addr == "" {
		addr = b.Addr("mqtt")
	}
	return Dial(addr, o)
}

// Connect is Dial for user id with password "pw-"+id, failing the test on
// error. The client id defaults to id+"-dev".
func (b *B) Connect(t testing.TB, id string, v5 bool) *Client {
	t.Helper()
	c, err := b.Dial(Opts{V5: v5, User: id, Password: "pw-" + id, ClientID: id + "-dev"})
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(c.Close)
	return c
}

// Dial connects to addr.
func Dial(addr string, o Opts) (*Client, error) {
	c := &Client{V5: o.V5, ID: o.ClientID, Msgs: make(chan Msg, 10000), gone: make(chan struct{})}
	ka := o.Keepalive
	if ka == 0 {
		ka = 30
	}
	if !o.V5 {
		opts := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(o.ClientID).
			SetUsername(o.User).SetPassword(o.Password).SetCleanSession(!o.Persistent).
			SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(time.Duration(ka) * time.Second).
			SetConnectTimeout(Timeout).SetOrderMatters(true).SetProtocolVersion(4).
			SetConnectionLostHandler(func(mqtt3.Client, error) { c.markGone() })
		if o.WillTopic != "" {
			opts.SetWill(o.WillTopic, "gone", 1, false)
		}
		opts.SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) {
			c.Msgs <- Msg{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Dup: m.Duplicate()}
		})
		c.c3 = mqtt3.NewClient(opts)
		tok := c.c3.Connect()
		if !tok.WaitTimeout(Timeout) {
			return nil, errors.New("connect timed out")
		}
		if err := tok.Error(); err != nil {
			if ct, ok := tok.(*mqtt3.ConnectToken); ok && ct.ReturnCode() != 0 {
				return nil, &ConnectError{Code: ct.ReturnCode()}
			}
			return nil, err
		}
		return c, nil
	}
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	c.c5 = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.Msgs <- Msg{Topic: pr.Packet.Topic, Payload: pr.Packet.Payload, QoS: pr.Packet.QoS, Dup: pr.Packet.Duplicate()}
			return true, nil
		}},
		OnClientError:      func(error) { c.markGone() },
		OnServerDisconnect: func(*paho.Disconnect) { c.markGone() },
	})
	cp := &paho.Connect{
		ClientID:     o.ClientID,
		KeepAlive:    ka,
		CleanStart:   !o.Persistent,
		Username:     o.User,
		UsernameFlag: o.User != "",
		Password:     []byte(o.Password),
		PasswordFlag: o.Password != "",
	}
	if o.Persistent {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	if o.WillTopic != "" {
		cp.WillMessage = &paho.WillMessage{Topic: o.WillTopic, Payload: []byte("gone"), QoS: 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	ca, err := c.c5.Connect(ctx, cp)
	if ca != nil && ca.ReasonCode != 0 {
		conn.Close()
		return nil, &ConnectError{Code: ca.ReasonCode}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) markGone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.gone:
	default:
		close(c.gone)
	}
}

// Gone is closed when the broker ended the connection.
func (c *Client) Gone() <-chan struct{} { return c.gone }

// Subscribe subscribes to one filter and returns the SUBACK code.
func (c *Client) Subscribe(filter string, qos byte) (byte, error) {
	if !c.V5 {
		tok := c.c3.Subscribe(filter, qos, nil)
		if !tok.WaitTimeout(Timeout) {
			return 0, errors.New("subscribe timed out")
		}
		if err := tok.Error(); err != nil {
			return 0, err
		}
		res := tok.(*mqtt3.SubscribeToken).Result()
		if code, ok := res[filter]; ok {
			return code, nil
		}
		// Paho files a shared subscription's code under the filter
		// without its "$share/{group}/" prefix.
		if inner, shared := imqtt.SplitShared(filter); shared {
			if code, ok := res[inner]; ok {
				return code, nil
			}
		}
		return 0, fmt.Errorf("no SUBACK code for %q in %v", filter, res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	sa, err := c.c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa != nil && len(sa.Reasons) == 1 {
		return sa.Reasons[0], nil
	}
	return 0, err
}

// Publish publishes and returns the MQTT 5 PUBACK reason code (0 for 3.1.1
// once acknowledged).
func (c *Client) Publish(topic string, qos byte, payload []byte) (byte, error) {
	if !c.V5 {
		tok := c.c3.Publish(topic, qos, false, payload)
		if !tok.WaitTimeout(Timeout) {
			return 0, errors.New("publish timed out")
		}
		return 0, tok.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	pr, err := c.c5.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if pr != nil {
		return pr.ReasonCode, nil
	}
	if err != nil && strings.Contains(err.Error(), "reason code") {
		return 0, err
	}
	return 0, err
}

// Next returns the next message, failing the test after Timeout.
func (c *Client) Next(t testing.TB) Msg {
	t.Helper()
	select {
	case m := <-c.Msgs:
		return m
	case <-time.After(Timeout):
		t.Fatalf("%s: no message within %s", c.ID, Timeout)
		return Msg{}
	}
}

// NextOn returns the next message on topic, skipping others.
func (c *Client) NextOn(t testing.TB, topic string) Msg {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		select {
		case m := <-c.Msgs:
			if m.Topic == topic {
				return m
			}
		case <-deadline:
			t.Fatalf("%s: no message on %s within %s", c.ID, topic, Timeout)
			return Msg{}
		}
	}
}

// Quiet fails the test if a message arrives within d.
func (c *Client) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.Msgs:
		t.Fatalf("%s: unexpected message on %s: %s", c.ID, m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// Close disconnects cleanly.
func (c *Client) Close() {
	if c.c3 != nil {
		c.c3.Disconnect(100)
	}
	if c.c5 != nil {
		_ = c.c5.Disconnect(&paho.Disconnect{})
		c.conn.Close()
	}
}

// Drop closes the network connection without DISCONNECT, as a lost link
// does.
func (c *Client) Drop() {
	if c.conn != nil {
		c.conn.Close()
		return
	}
	// Paho 3.1.1 hides its connection; a forced disconnect with no wait
	// still sends DISCONNECT, so tests that need a lost link use V5 or raw
	// connections.
	c.c3.Disconnect(0)
}

// Eventually polls cond until it holds or Timeout passes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
