package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the store's file name inside the data directory.
const FileName = "imqtt.db"

// SchemaVersion is the layout version this package reads and writes.
const SchemaVersion = 1

var (
	bucketMeta         = []byte("meta")
	bucketUsers        = []byte("users")
	bucketDevices      = []byte("devices")
	bucketUserDevices  = []byte("user_devices") // user \x00 clientID -> nil
	bucketTokens       = []byte("tokens")
	keySchema          = []byte("schema")
	allBuckets         = [][]byte{bucketMeta, bucketUsers, bucketDevices, bucketUserDevices, bucketTokens}
	_                  = storage.Users((*DB)(nil))
	_                  = storage.Devices((*DB)(nil))
	_                  = storage.Tokens((*DB)(nil))
	_                  = storage.Backup((*DB)(nil))
	_                  = storage.Transactor((*DB)(nil))
	_                  = storage.Streams((*DB)(nil))
	defaultLockTimeout = 500 * time.Millisecond
)

var errBucketMissing = errors.New("bucket missing")

// Options tune Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the
	// file; 0 means 500ms. It is never infinite.
	LockTimeout time.Duration
	// ReadOnly opens the file with a shared lock and no writes.
	ReadOnly bool
}

// DB is the bbolt-backed store.
type DB struct {
	db     *bbolt.DB
	path   string
	commit *committer
	// pruneFrom is the last stream PruneStreams looked at; only its own
	// caller (one janitor goroutine) touches it.
	pruneFrom []byte
}

// OpenDir opens (creating it and the directory if missing) the store in dir.
func OpenDir(dir string, o Options) (*DB, error) {
	if !o.ReadOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: create data directory: %w", err)
		}
	}
	return Open(filepath.Join(dir, FileName), o)
}

// Open opens the store file at path.
func Open(path string, o Options) (*DB, error) {
	timeout := o.LockTimeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	if err := precheck(path); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// The freelist is not written at each commit (NoFreelistSync) but
	// rebuilt at open: with a busy store it is many pages, and writing it
	// cost a third of every commit's writes (measured: 163 -> 129 pages per
	// commit, commit time 11 -> 6 ms, with 100 DM pairs). Committed data is
	// as safe; only Open does more work. The map freelist allocates in
	// constant time.
	bdb, err := openBolt(path, &bbolt.Options{Timeout: timeout, ReadOnly: o.ReadOnly,
		NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, imqtt.ErrStoreLocked)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, errPanicked), err != nil && strings.Contains(err.Error(), "file size too small"):
		return nil, fmt.Errorf("open store %s: %w: %v", path, imqtt.ErrStoreCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	d := &DB{db: bdb, path: path}
	if err := d.init(o.ReadOnly); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	d.commit = newCommitter(bdb)
	return d, nil
}

func (d *DB) init(readOnly bool) (err error) {
	// bbolt panics on some corrupt pages instead of returning errors; a
	// corrupt store must give an error, never a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", imqtt.ErrStoreCorrupt, r)
		}
	}()
	check := func(tx *bbolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return fmt.Errorf("%w: no meta bucket", imqtt.ErrStoreCorrupt)
		}
		v := m.Get(keySchema)
		if len(v) != 8 {
			return fmt.Errorf("%w: no schema version", imqtt.ErrStoreCorrupt)
		}
		if got := binary.BigEndian.Uint64(v); got != SchemaVersion {
			return fmt.Errorf("%w: file has version %d, this imqtt reads %d", imqtt.ErrSchema, got, SchemaVersion)
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%w: bucket %s missing: %w", imqtt.ErrStoreCorrupt, b, errBucketMissing)
			}
		}
		return nil
	}
	if readOnly {
		return d.db.View(check)
	}
	return d.db.Update(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			// A new file: create the layout. A file with other buckets but
			// no meta is not ours.
			empty := true
			_ = tx.ForEach(func([]byte, *bbolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("%w: not an imqtt store (no meta bucket)", imqtt.ErrStoreCorrupt)
			}
			for _, b := range allBuckets {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
			if err := tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion)); err != nil {
				return err
			}
		}
		if err := check(tx); err != nil && !errors.Is(err, errBucketMissing) {
			return err
		}
		// Buckets added within a schema version are created on first open.
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

var errPanicked = errors.New("bbolt panicked reading the file")

// openBolt is bbolt.Open with its panics on damaged files turned into
// errors.
func openBolt(path string, o *bbolt.Options) (db *bbolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", errPanicked, r)
		}
	}()
	return bbolt.Open(path, 0o600, o)
}

// Close closes the file. Pending commits have finished when it returns.
func (d *DB) Close() error {
	d.commit.close()
	return d.db.Close()
}

// Path returns the file path.
func (d *DB) Path() string { return d.path }

// Size returns the file size in bytes.
func (d *DB) Size() int64 {
	var n int64
	_ = d.db.View(func(tx *bbolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Check runs bbolt's consistency check over the whole file.
func (d *DB) Check() error {
	return d.db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("%w: %v", imqtt.ErrStoreCorrupt, err)
		}
		return nil
	})
}

// WriteBackup writes a consistent copy of the store to w, from one read
// transaction, while writers go on.
func (d *DB) WriteBackup(w io.Writer) (int64, error) {
	var n int64
	err := d.db.View(func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func pairKey(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// --- users ---

type userRec struct {
	Role    imqtt.Role `json:"role"`
	Hash    []byte     `json:"hash"`
	Created int64      `json:"created"`
}

func getUser(tx *bbolt.Tx, id string) (userRec, bool, error) {
	v := tx.Bucket(bucketUsers).Get([]byte(id))
	if v == nil {
		return userRec{}, false, nil
	}
	var r userRec
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("%w: user %q: %v", imqtt.ErrStoreCorrupt, id, err)
	}
	return r, true, nil
}

func putUser(tx *bbolt.Tx, id string, r userRec) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put([]byte(id), v)
}

// CreateUser implements storage.Users.
func (d *DB) CreateUser(u storage.User) error {
	if err := imqtt.ValidateID(u.ID); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	err := d.db.Update(func(tx *bbolt.Tx) error {
		if _, ok, err := getUser(tx, u.ID); err != nil || ok {
			if err == nil {
				err = imqtt.ErrExists
			}
			return err
		}
		created := u.Created
		if created.IsZero() {
			created = time.Now()
		}
		return putUser(tx, u.ID, userRec{Role: u.Role, Hash: u.Hash, Created: created.UnixMilli()})
	})
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.ID, err)
	}
	return nil
}

// User implements storage.Users.
func (d *DB) User(id string) (storage.User, error) {
	var u storage.User
	err := d.db.View(func(tx *bbolt.Tx) error {
		r, ok, err := getUser(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return imqtt.ErrNoSuchUser
		}
		u = storage.User{ID: id, Role: r.Role, Hash: r.Hash, Created: time.UnixMilli(r.Created)}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("get user %s: %w", id, err)
	}
	return u, nil
}

// SetPasswordHash implements storage.Users.
func (d *DB) SetPasswordHash(id string, hash []byte) error {
	err := d.db.Update(func(tx *bbolt.Tx) error {
		r, ok, err := getUser(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return imqtt.ErrNoSuchUser
		}
		r.Hash = hash
		return putUser(tx, id, r)
	})
	if err != nil {
		return fmt.Errorf("set password of %s: %w", id, err)
	}
	return nil
}

// DeleteUser implements storage.Users: see Tx.DeleteUser. It sends no
// events and leaves group memberships alone; chat.Service.RemoveUser does the
// whole removal of PROTOCOL.md section 7.
func (d *DB) DeleteUser(id string) error {
	err := d.Update(func(t storage.Tx) error { return t.DeleteUser(id) })
	if err != nil {
		return fmt.Errorf("delete user %s: %w", id, err)
	}
	return nil
}

// ListUsers implements storage.Users.
func (d *DB) ListUsers() ([]storage.User, error) {
	var out []storage.User
	err := d.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var r userRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: user %q: %v", imqtt.ErrStoreCorrupt, k, err)
			}
			out = append(out, storage.User{ID: string(k), Role: r.Role, Hash: r.Hash, Created: time.UnixMilli(r.Created)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// CountUsers returns the number of users.
func (d *DB) CountUsers() int {
	var n int
	_ = d.db.View(func(tx *bbolt.Tx) error { n = tx.Bucket(bucketUsers).Stats().KeyN; return nil })
	return n
}

func hasPrefix(b, p []byte) bool { return len(b) >= len(p) && string(b[:len(p)]) == string(p) }

// --- devices ---

type deviceRec struct {
	User    string `json:"user"`
	Created int64  `json:"created"`
}

// BindDevice implements storage.Devices.
func (d *DB) BindDevice(clientID, user string) (string, error) {
	// The common case, a known device, needs no write transaction.
	if dev, err := d.Device(clientID); err == nil {
		return dev.User, nil
	} else if !errors.Is(err, imqtt.ErrNotFound) {
		return "", err
	}
	var owner string
	// Through the committer, so that a storm of new devices shares
	// commits.
	err := d.Update(func(t storage.Tx) error {
		wt := t.(*tx)
		tx := wt.tx
		owner = ""
		b := tx.Bucket(bucketDevices)
		if v := b.Get([]byte(clientID)); v != nil {
			var r deviceRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: device %q: %v", imqtt.ErrStoreCorrupt, clientID, err)
			}
			owner = r.User
			return nil
		}
		if _, ok, err := getUser(tx, user); err != nil || !ok {
			if err == nil {
				err = imqtt.ErrNoSuchUser
			}
			return err
		}
		wt.dirty = true
		v, _ := json.Marshal(deviceRec{User: user, Created: time.Now().UnixMilli()})
		if err := b.Put([]byte(clientID), v); err != nil {
			return err
		}
		owner = user
		// A device's first connection starts at "now": its cursor is the
		// head of its user's stream.
		var head uint64
		if s := tx.Bucket(bucketStreams).Bucket([]byte(user)); s != nil {
			head = s.Sequence()
		}
		if err := tx.Bucket(bucketCursors).Put([]byte(clientID), u64(head)); err != nil {
			return err
		}
		return tx.Bucket(bucketUserDevices).Put(pairKey(user, clientID), nil)
	})
	if err != nil {
		return "", fmt.Errorf("bind device %q: %w", clientID, err)
	}
	return owner, nil
}

// Device implements storage.Devices.
func (d *DB) Device(clientID string) (storage.Device, error) {
	var dev storage.Device
	err := d.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketDevices).Get([]byte(clientID))
		if v == nil {
			return imqtt.ErrNotFound
		}
		var r deviceRec
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: device %q: %v", imqtt.ErrStoreCorrupt, clientID, err)
		}
		dev = storage.Device{ClientID: clientID, User: r.User, Created: time.UnixMilli(r.Created)}
		return nil
	})
	if err != nil {
		return dev, fmt.Errorf("get device %q: %w", clientID, err)
	}
	return dev, nil
}

// --- tokens ---

type tokenRec struct {
	User    string `json:"user"`
	Name    string `json:"name"`
	Hash    []byte `json:"hash"`
	Created int64  `json:"created"`
}

// CreateToken implements storage.Tokens.
func (d *DB) CreateToken(t storage.Token) error {
	err := d.db.Update(func(tx *bbolt.Tx) error {
		if _, ok, err := getUser(tx, t.User); err != nil || !ok {
			if err == nil {
				err = imqtt.ErrNoSuchUser
			}
			return err
		}
		b := tx.Bucket(bucketTokens)
		if b.Get([]byte(t.ID)) != nil {
			return imqtt.ErrExists
		}
		created := t.Created
		if created.IsZero() {
			created = time.Now()
		}
		v, _ := json.Marshal(tokenRec{User: t.User, Name: t.Name, Hash: t.Hash, Created: created.UnixMilli()})
		return b.Put([]byte(t.ID), v)
	})
	if err != nil {
		return fmt.Errorf("create token for %s: %w", t.User, err)
	}
	return nil
}

// Token implements storage.Tokens.
func (d *DB) Token(id string) (storage.Token, error) {
	var t storage.Token
	err := d.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get([]byte(id))
		if v == nil {
			return imqtt.ErrNotFound
		}
		var r tokenRec
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: token: %v", imqtt.ErrStoreCorrupt, err)
		}
		t = storage.Token{ID: id, User: r.User, Name: r.Name, Hash: r.Hash, Created: time.UnixMilli(r.Created)}
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// ListTokens implements storage.Tokens.
func (d *DB) ListTokens(user string) ([]storage.Token, error) {
	var out []storage.Token
	err := d.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var r tokenRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: token: %v", imqtt.ErrStoreCorrupt, err)
			}
			if r.User == user {
				out = append(out, storage.Token{ID: string(k), User: r.User, Name: r.Name, Created: time.UnixMilli(r.Created)})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", user, err)
	}
	sortTokens(out)
	return out, nil
}

// DeleteToken implements storage.Tokens.
func (d *DB) DeleteToken(user, id string) error {
	err := d.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		v := b.Get([]byte(id))
		if v == nil {
			return imqtt.ErrNotFound
		}
		var r tokenRec
		if err := json.Unmarshal(v, &r); err != nil || r.User != user {
			return imqtt.ErrNotFound
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete token of %s: %w", user, err)
	}
	return nil
}

// Ping reports whether the store answers a read.
func (d *DB) Ping() error {
	return d.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return imqtt.ErrStoreCorrupt
		}
		return nil
	})
}
