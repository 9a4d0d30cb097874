package broker_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imqtt/imqtt/broker/brokertest"
)

// Closing the broker while connections keep arriving on both MQTT
// listeners ends every one of them and returns: a connection accepted as
// the broker closes must not start after the broker stopped waiting for its
// clients (a WaitGroup misuse -race reports, and a connection left behind).
func TestCloseWhileConnecting(t *testing.T) {
	for round := 0; round < 3; round++ {
		b := brokertest.Start(t, nil)
		addrs := []string{b.Addr("mqtt"), b.Addr("ws")}
		var stop atomic.Bool
		var wg sync.WaitGroup
		var conns sync.Map
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(addr string) {
				defer wg.Done()
				for !stop.Load() {
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						continue
					}
					conns.Store(c, true)
				}
			}(addrs[i%2])
		}
		time.Sleep(20 * time.Millisecond) // let connections pile up mid-accept
		done := make(chan error, 1)
		go func() { done <- b.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Close: %v", round, err)
			}
		case <-time.After(brokertest.Timeout):
			t.Fatalf("round %d: Close did not return while connections were arriving", round)
		}
		stop.Store(true)
		wg.Wait()
		// Every TCP connection the broker accepted is closed by now: a
		// read sees EOF or a reset, not a timeout.
		conns.Range(func(k, _ any) bool {
			c := k.(net.Conn)
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(brokertest.Timeout))
			var buf [1]byte
			if _, err := c.Read(buf[:]); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("round %d: a connection to %s is still open after Close", round, c.RemoteAddr())
				}
			}
			return true
		})
	}
}
