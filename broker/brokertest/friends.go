package brokertest

import (
	"testing"
	"time"

	"github.com/imqtt/imqtt/storage"
)

// MakeFriends makes users a and c friends directly in the store, without
// the request and accept round trip (and so without friend events in their
// streams), for tests about what comes after.
func (b *B) MakeFriends(t testing.TB, a, c string) {
	t.Helper()
	err := b.Store().Update(func(tx storage.Tx) error {
		return tx.SetFriends(a, c, time.Now().UnixMilli())
	})
	if err != nil {
		t.Fatalf("make %s and %s friends: %v", a, c, err)
	}
}
