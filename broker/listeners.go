package broker

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// guard wraps mochi's establish callback with the two protections mochi
// lacks: a deadline for the CONNECT packet, and a recover so that a panic
// while decoding one client's packets (mochi issue #501) ends that
// connection only.
type guard struct {
	connectTimeout time.Duration
	log            *slog.Logger
	// onPanic cleans up after a client whose goroutine panicked.
	onPanic func(conn net.Conn, r any)
	// maxPacket is mochi's maximum packet size, for oversizeConn.
	maxPacket int

	// The connections being served, so that shutdown can end them and
	// wait: mochi's Close waits for its clients with a WaitGroup that each
	// connection Adds to when it starts, and an Add racing that Wait (a
	// connection accepted as the broker closes) is a misuse the race
	// detector reports.
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// track registers conn; false once shutdown has begun.
func (g *guard) track(conn net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.conns == nil {
		g.conns = map[net.Conn]struct{}{}
	}
	g.conns[conn] = struct{}{}
	g.wg.Add(1)
	return true
}

func (g *guard) untrack(conn net.Conn) {
	g.mu.Lock()
	delete(g.conns, conn)
	g.mu.Unlock()
	g.wg.Done()
}

// shutdown refuses new connections, closes those being served and waits
// until each has left mochi. Listeners call it from Close, before mochi
// waits for its clients.
func (g *guard) shutdown() {
	g.mu.Lock()
	g.closed = true
	conns := make([]net.Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	g.wg.Wait()
}

func (g *guard) establish(establish listeners.EstablishFn, id string, conn net.Conn) {
	if !g.track(conn) {
		_ = conn.Close()
		return
	}
	defer g.untrack(conn)
	defer func() {
		if r := recover(); r != nil {
			_ = conn.Close()
			g.onPanic(conn, r)
		}
	}()
	// mochi replaces this deadline with the keepalive one after CONNECT.
	_ = conn.SetDeadline(time.Now().Add(g.connectTimeout))
	if err := establish(id, newOversizeConn(conn, g.maxPacket)); err != nil && !quietErr(err) {
		g.log.Debug("connection ended", "listener", id, "remote", conn.RemoteAddr().String(), "error", err)
	}
}

func quietErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// tcpListener is a mochi listener over a net.Listener we bound ourselves
// (so ":0" works and the bound address is known).
type tcpListener struct {
	id    string
	ln    net.Listener
	guard *guard
	end   atomic.Bool
	// closeClients replaces mochi's, whose Clients.GetByListener takes its
	// read lock twice and can deadlock against a leaving client (mochi
	// #488).
	closeClients func(id string)
}

func (l *tcpListener) ID() string              { return l.id }
func (l *tcpListener) Address() string         { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string        { return "tcp" }
func (l *tcpListener) Init(*slog.Logger) error { return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		go l.guard.establish(establish, l.id, conn)
	}
}

func (l *tcpListener) Close(listeners.CloseFn) {
	if l.end.CompareAndSwap(false, true) {
		_ = l.ln.Close()
		l.closeClients(l.id)
		l.guard.shutdown()
	}
}

// maxMQTTPacket is the largest packet MQTT can encode: a 1-byte fixed
// header, a 4-byte remaining length and 268,435,455 bytes.
const maxMQTTPacket = 5 + 268435455

// wsListener serves MQTT over WebSocket on path /mqtt.
type wsListener struct {
	id        string
	ln        net.Listener
	guard     *guard
	srv       *http.Server
	end       atomic.Bool
	establish atomic.Pointer[listeners.EstablishFn]
	// closeClients: see tcpListener.
	closeClients func(id string)
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

// Init builds the HTTP server here rather than in Serve, which runs on its
// own goroutine, so that Close never races with it.
func (l *wsListener) Init(*slog.Logger) error {
	up := websocket.Upgrader{
		Subprotocols: []string{"mqtt"},
		// Browsers connect from any page; credentials, not origin, decide.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/mqtt", func(w http.ResponseWriter, r *http.Request) {
		establish := l.establish.Load()
		if establish == nil {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		// Any MQTT packet (up to 256 MiB) may arrive: mochi and
		// oversizeConn enforce the maximum packet size as the bytes
		// stream through, without holding a whole message.
		c.SetReadLimit(maxMQTTPacket)
		l.guard.establish(*establish, l.id, &wsConn{Conn: c.NetConn(), c: c})
	})
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish.Store(&establish)
	_ = l.srv.Serve(l.ln)
}

func (l *wsListener) Close(listeners.CloseFn) {
	if l.end.CompareAndSwap(false, true) {
		l.closeClients(l.id)
		// Close, not Shutdown: upgraded connections are hijacked (the
		// guard ends them), and Shutdown would leave connections that
		// never sent a request open until ReadHeaderTimeout.
		_ = l.srv.Close()
		_ = l.ln.Close()
		l.guard.shutdown()
	}
}

// wsConn presents a WebSocket as the byte stream mochi reads MQTT from.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader
	w sync.Mutex
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("websocket: MQTT needs binary messages")
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	ws.w.Lock()
	defer ws.w.Unlock()
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func tlsListen(addr string, cfg *tls.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	return ln, nil
}

// stack returns the current goroutine's stack for a panic log line.
func stack() string { return string(debug.Stack()) }
