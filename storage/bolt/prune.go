package bolt

import (
	"bytes"
	"encoding/binary"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imqtt/imqtt/storage"
)

// PruneStreams deletes delivery-stream entries no device will get: those
// every device of the user has acknowledged, those past the backlog bounds
// (more than maxEntries behind the head, or older than maxAge), and, for a
// user with no device, all of them (a first connection starts at "now").
// It looks at up to users streams per call, resuming where the last call
// stopped, so a large store is pruned in slices that never hold the writer
// for long. It returns how many entries it deleted.
func (d *DB) PruneStreams(maxEntries int, maxAge time.Duration, now time.Time, users int) (int, error) {
	deleted := 0
	var next []byte
	err := d.Update(func(t storage.Tx) error {
		deleted, next = 0, nil
		btx := t.(*tx)
		streams := btx.tx.Bucket(bucketStreams)
		c := streams.Cursor()
		k, _ := c.Seek(d.pruneFrom)
		if k != nil && bytes.Equal(k, d.pruneFrom) && len(d.pruneFrom) > 0 {
			k, _ = c.Next()
		}
		oldest := uint64(0)
		if maxAge > 0 {
			oldest = uint64(now.Add(-maxAge).UnixMilli())
		}
		for n := 0; k != nil && n < users; n++ {
			user := append([]byte(nil), k...)
			s := streams.Bucket(user)
			if s != nil {
				floor := btx.minCursor(string(user), s.Sequence())
				if maxEntries > 0 && s.Sequence() > uint64(maxEntries) {
					floor = max(floor, s.Sequence()-uint64(maxEntries))
				}
				n, err := pruneStream(btx, s, floor, oldest)
				if err != nil {
					return err
				}
				deleted += n
			}
			next = user
			k, _ = c.Next()
		}
		return nil
	})
	if err == nil {
		d.pruneFrom = next
	}
	return deleted, err
}

// minCursor is the lowest acknowledged position among user's devices, or
// head when it has none.
func (t *tx) minCursor(user string, head uint64) uint64 {
	floor := head
	prefix := pairKey(user, "")
	cur := t.tx.Bucket(bucketCursors)
	c := t.tx.Bucket(bucketUserDevices).Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		v := cur.Get(k[len(prefix):])
		if len(v) == 8 && beU64(v) < floor {
			floor = beU64(v)
		}
		if len(v) != 8 {
			floor = 0
		}
	}
	return floor
}

// pruneStream deletes entries at or below floor, and entries older than
// oldest (Unix ms; 0: no age bound) from the front of the stream.
func pruneStream(t *tx, s *bbolt.Bucket, floor, oldest uint64) (int, error) {
	var keys [][]byte
	c := s.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		old := oldest > 0 && len(v) >= 9 && binary.BigEndian.Uint64(v[1:9]) < oldest
		if beU64(k) > floor && !old {
			break
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	if len(keys) > 0 {
		t.dirty = true
	}
	for _, k := range keys {
		if err := s.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}
