package brokertest

import (
	"testing"
	"time"

	"github.com/imqtt/imqtt/storage"
)

// MakeFriendsSmoke makes a and b friends directly in the store.
func (b *B) MakeFriendsSmoke(t testing.TB, a, c string) {
	t.Helper()
	if err := b.Store().Update(func(tx storage.Tx) error { return tx.SetFriends(a, c, time.Now().UnixMilli()) }); err != nil {
		t.Fatal(err)
	}
}
