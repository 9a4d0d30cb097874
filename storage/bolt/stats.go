package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	bbolt "go.etcd.io/bbolt"
)

// StoreStats are the store's figures for /stats and /metrics.
type StoreStats struct {
	// Users counts users, operators included.
	Users int
	// Devices counts bound client ids.
	Devices int
	// Groups counts groups.
	Groups int
	// Conversations counts groups plus DMs with at least one message.
	Conversations int
	// Messages counts the messages stored now, over every conversation.
	Messages uint64
	// StreamEntries counts delivery stream entries (message references and
	// stored events) still in the store, over every user.
	StreamEntries uint64
	// Backlog counts the stream entries after each device's saved cursor,
	// over every device: what offline devices have still to get (for an
	// online device: what is in flight or acknowledged but not yet saved).
	Backlog uint64
	// BacklogDevices counts the devices with a backlog.
	BacklogDevices int
	// OldestBacklogTS is the time (Unix ms) of the oldest entry waiting for
	// a device; 0 when there is no backlog.
	OldestBacklogTS int64
	// Bytes is the size of the store file.
	Bytes int64
}

// Stats returns the store's figures from one read transaction. Its cost
// grows with users, devices and conversations, never with messages or
// stream entries: a conversation's messages are counted by its bucket's
// sequence (seqs are gapless and never reused, and nothing deletes single
// messages; a deleted group takes its bucket along), a stream's entries by
// its first and last positions.
func (d *DB) Stats() (StoreStats, error) {
	var s StoreStats
	err := d.db.View(func(btx *bbolt.Tx) error {
		s.Users = btx.Bucket(bucketUsers).Stats().KeyN
		s.Devices = btx.Bucket(bucketDevices).Stats().KeyN
		s.Groups = btx.Bucket(bucketGroups).Stats().KeyN
		s.Conversations = s.Groups

		msgs := btx.Bucket(bucketMsgs)
		err := msgs.ForEachBucket(func(k []byte) error {
			seq := msgs.Bucket(k).Sequence()
			s.Messages += seq
			if hasPrefix(k, []byte("dm:")) && seq > 0 {
				s.Conversations++
			}
			return nil
		})
		if err != nil {
			return err
		}

		streams := btx.Bucket(bucketStreams)
		err = streams.ForEachBucket(func(k []byte) error {
			first, head := streamRange(streams.Bucket(k))
			if first > 0 {
				s.StreamEntries += head - first + 1
			}
			return nil
		})
		if err != nil {
			return err
		}

		// user_devices is sorted by user, so each user's stream is opened
		// once for all of its devices.
		cursors := btx.Bucket(bucketCursors)
		var (
			user        []byte
			stream      *bbolt.Bucket
			first, head uint64
		)
		c := btx.Bucket(bucketUserDevices).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			i := bytes.IndexByte(k, 0)
			if i < 0 {
				continue
			}
			u, client := k[:i], k[i+1:]
			if user == nil || !bytes.Equal(u, user) {
				user = append(user[:0:0], u...)
				stream = streams.Bucket(u)
				first, head = 0, 0
				if stream != nil {
					first, head = streamRange(stream)
				}
			}
			if first == 0 {
				continue
			}
			// Entries before first were pruned: past the backlog bounds,
			// they wait for nobody.
			from := max(beU64(cursors.Get(client))+1, first)
			if from > head {
				continue
			}
			s.Backlog += head - from + 1
			s.BacklogDevices++
			if v := stream.Get(u64(from)); len(v) >= 9 {
				ts := int64(binary.BigEndian.Uint64(v[1:9]))
				if s.OldestBacklogTS == 0 || ts < s.OldestBacklogTS {
					s.OldestBacklogTS = ts
				}
			}
		}

		s.Bytes = btx.Size()
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("store stats: %w", err)
	}
	// The file is larger than the transaction's view of it: bbolt grows it
	// in steps ahead of use.
	if fi, err := os.Stat(d.path); err == nil {
		s.Bytes = fi.Size()
	}
	return s, nil
}

// streamRange returns the positions of a stream's first and last entries,
// 0 and the head when it has none. Entries are only ever appended at the
// head and pruned from the front, so those between are all there.
func streamRange(stream *bbolt.Bucket) (first, head uint64) {
	head = stream.Sequence()
	k, _ := stream.Cursor().First()
	if k == nil {
		return 0, head
	}
	return beU64(k), head
}
