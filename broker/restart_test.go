package broker_test

import (
	"testing"

	"github.com/imqtt/imqtt/broker/brokertest"
)

// TestRestartDrainsBacklog stops the broker gracefully while a device has a
// backlog, starts a new one on the same store, and checks that the device
// gets the whole backlog in order, and nothing it had acknowledged before
// the stop: the stop saves the delivery cursors, however recent the
// acknowledgements.
func TestRestartDrainsBacklog(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(dlvProto(v5), func(t *testing.T) {
			t.Parallel()
			b1 := brokertest.Start(t, dlvConfig)
			b1.Users("alice", "bob")
			b1.MakeFriends(t, "alice", "bob")

			// bob's device acknowledges the first 100 right before the
			// stop: a PINGRESP after the PUBACKs means the broker has
			// handled them, and the cursor flush has likely not run yet.
			d := dlvDialRaw(t, b1, "bob", "bob-dev", v5)
			dlvFlood(t, b1, "alice", "bob", "a", 100)
			d.read(t, func() bool { return len(d.got) == 100 })
			dlvCheckFlood(t, "before the stop", d.got, "a", 100)
			d.ackAll()
			d.sync(t)
			d.Close()

			dlvFlood(t, b1, "alice", "bob", "b", 400)
			if err := b1.Close(); err != nil {
				t.Fatalf("graceful stop: %v", err)
			}

			b2 := brokertest.StartIn(t, b1.Dir, dlvConfig)
			if err := b2.Store().Check(); err != nil {
				t.Fatalf("store after the restart: %v", err)
			}
			bob := dlvDevice(t, b2, "bob", "bob-dev", v5, false)
			a := dlvDial(t, b2, "alice", "alice-dev", v5, false)
			dlvSend(t, a, "bob", `{"id":"newer","body":"after the restart"}`)
			got := dlvUntil(t, bob, dlvTopic("bob", "alice"), "newer")
			if len(got) != 401 {
				t.Fatalf("after the restart got %d messages, want the 400 of the backlog then the newer one (first: %s)", len(got), got[0].raw)
			}
			dlvCheckRun(t, "bob-dev", got, "dm:alice:bob", 101)
			dlvCheckFlood(t, "bob-dev", got[:400], "b", 400)
		})
	}
}
