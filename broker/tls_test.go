package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/broker/brokertest"
)

// hdCert writes a self-signed certificate for 127.0.0.1 and its key, and
// returns their paths and a pool that trusts it.
func hdCert(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "imqtt test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// hdConnack sends a 3.1.1 CONNECT for alice on conn and returns the
// CONNACK return code.
func hdConnack(t *testing.T, conn net.Conn) byte {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(brokertest.Timeout))
	if _, err := conn.Write(brokertest.Encode(t, 4, brokertest.ConnectPacket(brokertest.Opts{
		ClientID: "alice-tls", User: "alice", Password: "pw-alice", Keepalive: 30}))); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if ack[0] != packets.Connack<<4 || ack[1] != 2 {
		t.Fatalf("not a CONNACK: %x", ack)
	}
	return ack[3]
}

// docs/SECURITY.md: with tls.cert and tls.key set, the MQTT and WebSocket
// listeners speak TLS 1.2 or later only, and HTTP stays plain.
func TestTLSListeners(t *testing.T) {
	cert, key, pool := hdCert(t)
	b := brokertest.Start(t, func(c *broker.Config) { c.TLS = broker.TLS{Cert: cert, Key: key} })
	b.Users("alice")
	client := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	t.Run("MQTT over TLS", func(t *testing.T) {
		conn, err := tls.Dial("tcp", b.Addr("mqtt"), client)
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer conn.Close()
		if v := conn.ConnectionState().Version; v < tls.VersionTLS12 {
			t.Errorf("negotiated TLS version %x", v)
		}
		if rc := hdConnack(t, conn); rc != 0 {
			t.Fatalf("CONNACK %d", rc)
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		old := client.Clone()
		old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		conn, err := tls.Dial("tcp", b.Addr("mqtt"), old)
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
	t.Run("plain MQTT refused", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", b.Addr("mqtt"), brokertest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(brokertest.Timeout))
		_, _ = conn.Write(brokertest.Encode(t, 4, brokertest.ConnectPacket(brokertest.Opts{
			ClientID: "alice-plain", User: "alice", Password: "pw-alice", Keepalive: 30})))
		var buf [64]byte
		n, _ := conn.Read(buf[:])
		if n >= 4 && buf[0] == packets.Connack<<4 {
			t.Fatalf("a plain-text CONNECT got a CONNACK: %x", buf[:n])
		}
	})
	t.Run("WebSocket over TLS", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: brokertest.Timeout, TLSClientConfig: client}
		ws, _, err := d.Dial("wss://"+b.Addr("ws")+"/mqtt", nil)
		if err != nil {
			t.Fatalf("wss dial: %v", err)
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(brokertest.Timeout))
		connect := brokertest.Encode(t, 4, brokertest.ConnectPacket(brokertest.Opts{
			ClientID: "alice-wss", User: "alice", Password: "pw-alice", Keepalive: 30}))
		if err := ws.WriteMessage(websocket.BinaryMessage, connect); err != nil {
			t.Fatal(err)
		}
		_, ack, err := ws.ReadMessage()
		if err != nil || len(ack) != 4 || ack[0] != packets.Connack<<4 || ack[3] != 0 {
			t.Fatalf("CONNACK %x, %v", ack, err)
		}
	})
	t.Run("HTTP stays plain", func(t *testing.T) {
		if s := hdStats(t, b); s.Users != 1 {
			t.Errorf("/stats over plain HTTP: users = %d", s.Users)
		}
	})
}
