package bolt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
	bbolt "go.etcd.io/bbolt"
)

// openTestDB opens a fresh store in a temporary directory. Its cleanup runs
// bbolt's consistency check before closing: every store test ends with a
// whole-file check.
func openTestDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.OpenDir(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	checkOnCleanup(t, db)
	return db
}

func checkOnCleanup(t *testing.T, db *bolt.DB) {
	t.Helper()
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
}

func mustCreateUser(t *testing.T, db *bolt.DB, id string) {
	t.Helper()
	if err := db.CreateUser(storage.User{ID: id, Role: imqtt.RoleUser, Hash: []byte("hash-of-" + id)}); err != nil {
		t.Fatalf("CreateUser(%s): %v", id, err)
	}
}

func userIDs(t *testing.T, db *bolt.DB) []string {
	t.Helper()
	us, err := db.ListUsers()
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	ids := make([]string, len(us))
	for i, u := range us {
		ids[i] = u.ID
	}
	return ids
}

func TestOpenCreatesPrivateFileWithSchema(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, err := bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, bolt.FileName)
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if err := db.Ping(); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if db.Size() <= 0 {
		t.Errorf("Size() = %d", db.Size())
	}
	if err := db.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("store file mode = %v, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("data directory mode = %v, want no group or other access", perm)
	}

	// Read the layout with bbolt itself: the schema version is part of the
	// file format that later versions must recognise.
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	err = raw.View(func(tx *bbolt.Tx) error {
		m := tx.Bucket([]byte("meta"))
		if m == nil {
			t.Fatal("no meta bucket")
		}
		v := m.Get([]byte("schema"))
		if len(v) != 8 || binary.BigEndian.Uint64(v) != bolt.SchemaVersion {
			t.Errorf("schema = %x, want 8-byte big-endian %d", v, bolt.SchemaVersion)
		}
		for _, b := range []string{"users", "devices", "tokens"} {
			if tx.Bucket([]byte(b)) == nil {
				t.Errorf("bucket %q missing", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreateUser(t, db, "alice")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	checkOnCleanup(t, db)
	u, err := db.User("alice")
	if err != nil {
		t.Fatalf("User(alice) after reopen: %v", err)
	}
	if string(u.Hash) != "hash-of-alice" {
		t.Errorf("hash after reopen = %q", u.Hash)
	}
}

func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreateUser(t, db, "alice")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := bolt.OpenDir(dir, bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	defer ro.Close()
	if got := userIDs(t, ro); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("users = %q", got)
	}
	if err := ro.Check(); err != nil {
		t.Error(err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	db := func() *bolt.DB {
		db, err := bolt.OpenDir(dir, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkOnCleanup(t, db)
		return db
	}()
	for _, ro := range []bool{false, true} {
		start := time.Now()
		second, err := bolt.OpenDir(dir, bolt.Options{LockTimeout: 50 * time.Millisecond, ReadOnly: ro})
		if err == nil {
			second.Close()
			t.Fatalf("ReadOnly=%v: second Open of a held store succeeded", ro)
		}
		if !errors.Is(err, imqtt.ErrStoreLocked) {
			t.Errorf("ReadOnly=%v: second Open = %v, want ErrStoreLocked", ro, err)
		}
		// A generous bound: only "it does not wait forever" is asserted.
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("ReadOnly=%v: second Open took %v", ro, d)
		}
	}
	if err := db.Ping(); err != nil {
		t.Errorf("first store after a refused second Open: %v", err)
	}
}

// openEnv names the store file TestOpenInChildProcess opens.
const openEnv = "IMQTT_BOLT_TEST_OPEN"

// TestOpenInChildProcess is not a test on its own: openChild runs it in a
// child process, because bbolt can die of SIGBUS on a damaged file, which no
// recover catches and which would take the whole test binary down.
func TestOpenInChildProcess(t *testing.T) {
	path := os.Getenv(openEnv)
	if path == "" {
		t.Skip("run by openChild")
	}
	db, err := bolt.Open(path, bolt.Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		fmt.Printf("RESULT corrupt=%v schema=%v locked=%v err=%v\n",
			errors.Is(err, imqtt.ErrStoreCorrupt), errors.Is(err, imqtt.ErrSchema), errors.Is(err, imqtt.ErrStoreLocked), err)
		return
	}
	defer db.Close()
	checkErr := db.Check()
	var ids []string
	if us, err := db.ListUsers(); err == nil {
		for _, u := range us {
			ids = append(ids, u.ID)
		}
	}
	fmt.Printf("RESULT ok check=%v users=%s\n", checkErr, strings.Join(ids, ","))
}

// openChild opens the store file at path in a child process and returns
// what TestOpenInChildProcess printed ("" if it crashed) and its output.
func openChild(t *testing.T, path string) (result string, out []byte) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenInChildProcess$", "-test.count=1", "-test.v")
	// The race detector sleeps a second at exit unless told not to.
	cmd.Env = append(os.Environ(), openEnv+"="+path, "GORACE=atexit_sleep_ms=0")
	out, _ = cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			result = r
		}
	}
	if result == "" {
		t.Fatalf("Open crashed (%s):\n%s", crashLine(out), firstLines(out, 30))
	}
	return result, out
}

// openBroken opens a store file written by the test, in a child process,
// and requires an error wrapping want ("corrupt" or "schema").
func openBroken(t *testing.T, path, want string) {
	t.Helper()
	result, _ := openChild(t, path)
	switch {
	case strings.HasPrefix(result, "ok"):
		t.Fatalf("Open succeeded (%s), want %s", result, want)
	case !strings.Contains(result, want+"=true"):
		t.Fatalf("Open: %s; want %s=true", result, want)
	}
}

func crashLine(out []byte) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "panic: ") || strings.Contains(l, "[signal ") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

func TestOpenGarbageIsCorrupt(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"text", bytes.Repeat([]byte("this is not a bbolt file\n"), 1000)},
		{"zeros", make([]byte, 64<<10)},
		{"short text", []byte("hello")},
		{"pseudo-random", func() []byte {
			b := make([]byte, 32<<10)
			x := uint32(2463534242)
			for i := range b {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				b[i] = byte(x)
			}
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), bolt.FileName)
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			openBroken(t, path, "corrupt")
		})
	}
}

func TestOpenTruncated(t *testing.T) {
	src := filepath.Join(t.TempDir(), bolt.FileName)
	db, err := bolt.Open(src, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Enough users to spread the data over several pages.
	var ids []string
	for i := range 300 {
		id := fmt.Sprintf("user%03d", i)
		ids = append(ids, id)
		if err := db.CreateUser(storage.User{ID: id, Hash: bytes.Repeat([]byte{'h'}, 60)}); err != nil {
			t.Fatal(err)
		}
	}
	// Pages past the high-water mark hold nothing: bbolt grows the file
	// ahead of use.
	used := int(db.Size())
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	whole := "ok check=<nil> users=" + strings.Join(ids, ",")
	page := os.Getpagesize()
	for _, n := range []int{0, 100, page, page + 1, 2 * page, 3 * page, used / 2, used - page, used - 1, used, len(full) - 1} {
		if n < 0 || n >= len(full) {
			continue
		}
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), bolt.FileName)
			if err := os.WriteFile(path, full[:n], 0o600); err != nil {
				t.Fatal(err)
			}
			result, _ := openChild(t, path)
			switch {
			case n == 0:
				// A store cut to nothing must not come back as a new,
				// empty one.
				if !strings.Contains(result, "corrupt=true") {
					t.Errorf("empty file: %s; want ErrStoreCorrupt", result)
				}
			case n >= used:
				// Only unused pages are gone: the store is whole.
				if result != whole {
					t.Errorf("truncated to %d of %d bytes (%d used): %.200s", n, len(full), used, result)
				}
			case strings.HasPrefix(result, "ok"):
				// Acceptable only if nothing was lost (the cut bytes were
				// zeros); an open store missing data is silent loss.
				if result != whole {
					t.Errorf("truncated to %d of %d used bytes: Open succeeded with a damaged store (%.200s), want ErrStoreCorrupt", n, used, result)
				}
			case !strings.Contains(result, "corrupt=true"):
				t.Errorf("truncated to %d of %d used bytes: %s; want ErrStoreCorrupt", n, used, result)
			}
		})
	}
}

// writeRawStore writes a bbolt file with the given meta schema value (nil:
// no meta bucket) and extra buckets.
func writeRawStore(t *testing.T, schema []byte, buckets ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), bolt.FileName)
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bbolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		if schema == nil {
			return nil
		}
		m, err := tx.CreateBucketIfNotExists([]byte("meta"))
		if err != nil {
			return err
		}
		return m.Put([]byte("schema"), schema)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenOtherSchemaVersion(t *testing.T) {
	for _, v := range []uint64{0, bolt.SchemaVersion + 1, 1 << 40} {
		t.Run(strconv.FormatUint(v, 10), func(t *testing.T) {
			b := make([]byte, 8)
			binary.BigEndian.PutUint64(b, v)
			path := writeRawStore(t, b, "users", "devices")
			openBroken(t, path, "schema")
			// A refused file is left as it was.
			raw, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			_ = raw.View(func(tx *bbolt.Tx) error {
				if got := tx.Bucket([]byte("meta")).Get([]byte("schema")); !bytes.Equal(got, b) {
					t.Errorf("schema rewritten to %x", got)
				}
				if tx.Bucket([]byte("tokens")) != nil {
					t.Error("Open created buckets in a store it refused")
				}
				return nil
			})
		})
	}
}

func TestOpenForeignBboltFile(t *testing.T) {
	t.Run("no meta", func(t *testing.T) {
		openBroken(t, writeRawStore(t, nil, "something_else"), "corrupt")
	})
	t.Run("bad schema value", func(t *testing.T) {
		openBroken(t, writeRawStore(t, []byte("v1")), "corrupt")
	})
}

func TestOpenAddsMissingBuckets(t *testing.T) {
	// A store of this schema version written before a bucket existed gains
	// it on open.
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, bolt.SchemaVersion)
	path := writeRawStore(t, b, "users")
	db, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	checkOnCleanup(t, db)
	mustCreateUser(t, db, "alice")
	if err := db.CreateToken(storage.Token{ID: "0123456789abcdef", User: "alice", Hash: []byte("h")}); err != nil {
		t.Errorf("CreateToken in a store that lacked the tokens bucket: %v", err)
	}
	if _, err := db.BindDevice("phone", "alice"); err != nil {
		t.Errorf("BindDevice in a store that lacked the devices bucket: %v", err)
	}
}

func TestUsers(t *testing.T) {
	db := openTestDB(t)
	created := time.UnixMilli(1764250000123)
	if err := db.CreateUser(storage.User{ID: "bob", Role: imqtt.RoleOperator, Hash: []byte("h1"), Created: created}); err != nil {
		t.Fatal(err)
	}
	u, err := db.User("bob")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != "bob" || u.Role != imqtt.RoleOperator || string(u.Hash) != "h1" || !u.Created.Equal(created) {
		t.Errorf("User(bob) = %+v", u)
	}

	t.Run("duplicate", func(t *testing.T) {
		err := db.CreateUser(storage.User{ID: "bob", Hash: []byte("other")})
		if !errors.Is(err, imqtt.ErrExists) {
			t.Errorf("CreateUser(bob) again = %v, want ErrExists", err)
		}
		if u, _ := db.User("bob"); string(u.Hash) != "h1" {
			t.Errorf("duplicate CreateUser changed the hash to %q", u.Hash)
		}
	})
	t.Run("invalid ids", func(t *testing.T) {
		for _, id := range []string{"", "Bob", "_bob", "a/b", "+", "#", "bob\x00x"} {
			err := db.CreateUser(storage.User{ID: id, Hash: []byte("h")})
			if !errors.Is(err, imqtt.ErrBadRequest) {
				t.Errorf("CreateUser(%q) = %v, want ErrBadRequest", id, err)
			}
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if _, err := db.User("nobody"); !errors.Is(err, imqtt.ErrNoSuchUser) {
			t.Errorf("User(nobody) = %v, want ErrNoSuchUser", err)
		}
		if err := db.SetPasswordHash("nobody", []byte("h")); !errors.Is(err, imqtt.ErrNoSuchUser) {
			t.Errorf("SetPasswordHash(nobody) = %v, want ErrNoSuchUser", err)
		}
		if err := db.DeleteUser("nobody"); !errors.Is(err, imqtt.ErrNoSuchUser) {
			t.Errorf("DeleteUser(nobody) = %v, want ErrNoSuchUser", err)
		}
	})
	t.Run("set password hash", func(t *testing.T) {
		if err := db.SetPasswordHash("bob", []byte("h2")); err != nil {
			t.Fatal(err)
		}
		u, err := db.User("bob")
		if err != nil {
			t.Fatal(err)
		}
		if string(u.Hash) != "h2" || u.Role != imqtt.RoleOperator || !u.Created.Equal(created) {
			t.Errorf("after SetPasswordHash: %+v", u)
		}
	})
	t.Run("created defaults to now", func(t *testing.T) {
		before := time.Now().Add(-time.Second)
		mustCreateUser(t, db, "dora")
		u, err := db.User("dora")
		if err != nil {
			t.Fatal(err)
		}
		if u.Created.Before(before) || u.Created.After(time.Now().Add(time.Second)) {
			t.Errorf("Created = %v, want about now", u.Created)
		}
	})
}

func TestListUsersOrder(t *testing.T) {
	db := openTestDB(t)
	if got, err := db.ListUsers(); err != nil || len(got) != 0 {
		t.Fatalf("ListUsers on an empty store = %v, %v", got, err)
	}
	ids := []string{"zed", "alice", "a_", "a0", "bob", "a-", "a", "9"}
	for _, id := range ids {
		mustCreateUser(t, db, id)
	}
	want := slices.Clone(ids)
	slices.Sort(want) // byte order
	if got := userIDs(t, db); !slices.Equal(got, want) {
		t.Errorf("ListUsers = %q, want %q", got, want)
	}
	if n := db.CountUsers(); n != len(ids) {
		t.Errorf("CountUsers = %d, want %d", n, len(ids))
	}
	if err := db.DeleteUser("bob"); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(s string) bool { return s == "bob" })
	if got := userIDs(t, db); !slices.Equal(got, want) {
		t.Errorf("after DeleteUser(bob): ListUsers = %q, want %q", got, want)
	}
}

func TestBindDevice(t *testing.T) {
	db := openTestDB(t)
	mustCreateUser(t, db, "alice")
	mustCreateUser(t, db, "bob")

	bind := func(clientID, user, wantOwner string) {
		t.Helper()
		owner, err := db.BindDevice(clientID, user)
		if err != nil {
			t.Fatalf("BindDevice(%q, %s): %v", clientID, user, err)
		}
		if owner != wantOwner {
			t.Fatalf("BindDevice(%q, %s) = %q, want %q", clientID, user, owner, wantOwner)
		}
	}
	bind("phone", "alice", "alice")
	bind("phone", "alice", "alice") // the same user again
	bind("phone", "bob", "alice")   // first binder wins
	bind("laptop", "bob", "bob")

	dev, err := db.Device("phone")
	if err != nil {
		t.Fatal(err)
	}
	if dev.ClientID != "phone" || dev.User != "alice" || dev.Created.IsZero() {
		t.Errorf("Device(phone) = %+v", dev)
	}
	if _, err := db.Device("tablet"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("Device(tablet) = %v, want ErrNotFound", err)
	}
	if _, err := db.BindDevice("tablet", "nobody"); !errors.Is(err, imqtt.ErrNoSuchUser) {
		t.Errorf("BindDevice(tablet, nobody) = %v, want ErrNoSuchUser", err)
	}
	if _, err := db.Device("tablet"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("a refused BindDevice left a binding: %v", err)
	}

	// Deleting alice frees her client ids for anyone.
	if err := db.DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Device("phone"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("Device(phone) after DeleteUser(alice) = %v, want ErrNotFound", err)
	}
	bind("phone", "bob", "bob")
	// bob's own bindings survived.
	if dev, err := db.Device("laptop"); err != nil || dev.User != "bob" {
		t.Errorf("Device(laptop) = %+v, %v", dev, err)
	}

	// A user re-created under a deleted id starts without the old bindings.
	mustCreateUser(t, db, "alice")
	bind("phone", "alice", "bob")
}

func TestTokens(t *testing.T) {
	db := openTestDB(t)
	mustCreateUser(t, db, "alice")
	mustCreateUser(t, db, "bob")

	base := time.UnixMilli(1764250000000)
	create := func(id, user, name string, at time.Duration) {
		t.Helper()
		tok := storage.Token{ID: id, User: user, Name: name, Hash: []byte("hash-" + id), Created: base.Add(at)}
		if err := db.CreateToken(tok); err != nil {
			t.Fatalf("CreateToken(%s): %v", id, err)
		}
	}
	// Ids in an order unlike creation order, to see ListTokens sort by age.
	create("ffff000000000003", "alice", "laptop", 3*time.Second)
	create("0000000000000001", "alice", "phone", 1*time.Second)
	create("aaaa000000000002", "alice", "", 2*time.Second)
	create("bbbb000000000001", "bob", "sensor", 1*time.Second)

	got, err := db.Token("0000000000000001")
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "alice" || got.Name != "phone" || string(got.Hash) != "hash-0000000000000001" || !got.Created.Equal(base.Add(time.Second)) {
		t.Errorf("Token = %+v", got)
	}
	if _, err := db.Token("nope"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("Token(nope) = %v, want ErrNotFound", err)
	}
	if err := db.CreateToken(storage.Token{ID: "0000000000000001", User: "bob", Hash: []byte("x")}); !errors.Is(err, imqtt.ErrExists) {
		t.Errorf("CreateToken with a taken id = %v, want ErrExists", err)
	}
	if got, _ := db.Token("0000000000000001"); got.User != "alice" {
		t.Errorf("a refused CreateToken changed the token's user to %q", got.User)
	}
	if err := db.CreateToken(storage.Token{ID: "cccc", User: "nobody", Hash: []byte("x")}); !errors.Is(err, imqtt.ErrNoSuchUser) {
		t.Errorf("CreateToken for nobody = %v, want ErrNoSuchUser", err)
	}

	listIDs := func(user string) []string {
		t.Helper()
		ts, err := db.ListTokens(user)
		if err != nil {
			t.Fatalf("ListTokens(%s): %v", user, err)
		}
		var ids []string
		for _, tk := range ts {
			if tk.User != user {
				t.Errorf("ListTokens(%s) returned a token of %s", user, tk.User)
			}
			ids = append(ids, tk.ID)
		}
		return ids
	}
	if ids := listIDs("alice"); !slices.Equal(ids, []string{"0000000000000001", "aaaa000000000002", "ffff000000000003"}) {
		t.Errorf("ListTokens(alice) = %q, want oldest first", ids)
	}
	if ids := listIDs("bob"); !slices.Equal(ids, []string{"bbbb000000000001"}) {
		t.Errorf("ListTokens(bob) = %q", ids)
	}
	if ids := listIDs("nobody"); len(ids) != 0 {
		t.Errorf("ListTokens(nobody) = %q", ids)
	}

	// Only the owner can delete a token.
	if err := db.DeleteToken("bob", "0000000000000001"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("DeleteToken by another user = %v, want ErrNotFound", err)
	}
	if _, err := db.Token("0000000000000001"); err != nil {
		t.Errorf("token gone after a refused DeleteToken: %v", err)
	}
	if err := db.DeleteToken("alice", "0000000000000001"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Token("0000000000000001"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("Token after DeleteToken = %v, want ErrNotFound", err)
	}
	if err := db.DeleteToken("alice", "0000000000000001"); !errors.Is(err, imqtt.ErrNotFound) {
		t.Errorf("second DeleteToken = %v, want ErrNotFound", err)
	}

	// DeleteUser takes the user's tokens and nobody else's.
	if err := db.DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"aaaa000000000002", "ffff000000000003"} {
		if _, err := db.Token(id); !errors.Is(err, imqtt.ErrNotFound) {
			t.Errorf("Token(%s) after DeleteUser(alice) = %v, want ErrNotFound", id, err)
		}
	}
	if ids := listIDs("alice"); len(ids) != 0 {
		t.Errorf("ListTokens(alice) after DeleteUser = %q", ids)
	}
	if _, err := db.Token("bbbb000000000001"); err != nil {
		t.Errorf("bob's token after DeleteUser(alice): %v", err)
	}
}

func TestWriteBackup(t *testing.T) {
	db := openTestDB(t)
	for _, id := range []string{"carol", "alice", "bob"} {
		mustCreateUser(t, db, id)
	}
	if _, err := db.BindDevice("phone", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateToken(storage.Token{ID: "0123456789abcdef", User: "bob", Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	n, err := db.WriteBackup(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n == 0 {
		t.Errorf("WriteBackup reported %d bytes, wrote %d", n, buf.Len())
	}
	// The original keeps serving writes after a backup.
	mustCreateUser(t, db, "dave")

	path := filepath.Join(t.TempDir(), bolt.FileName)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cp, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("open backup: %v", err)
	}
	checkOnCleanup(t, cp)
	if got := userIDs(t, cp); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("backup users = %q", got)
	}
	if u, err := cp.User("alice"); err != nil || string(u.Hash) != "hash-of-alice" {
		t.Errorf("backup User(alice) = %+v, %v", u, err)
	}
	if dev, err := cp.Device("phone"); err != nil || dev.User != "alice" {
		t.Errorf("backup Device(phone) = %+v, %v", dev, err)
	}
	if tk, err := cp.Token("0123456789abcdef"); err != nil || tk.User != "bob" {
		t.Errorf("backup Token = %+v, %v", tk, err)
	}
}

func TestWriteBackupFailingWriter(t *testing.T) {
	db := openTestDB(t)
	mustCreateUser(t, db, "alice")
	if _, err := db.WriteBackup(failWriter{}); err == nil {
		t.Error("WriteBackup to a failing writer returned nil")
	}
	if err := db.Ping(); err != nil {
		t.Errorf("Ping after a failed backup: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPing(t *testing.T) {
	db := openTestDB(t)
	if err := db.Ping(); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestUpdateAfterClose(t *testing.T) {
	db, err := bolt.OpenDir(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(storage.Tx) error { return nil })
	if !errors.Is(err, bolt.ErrClosed) {
		t.Errorf("Update after Close = %v, want ErrClosed", err)
	}
}

func TestOpenKeepsRetiredBucket(t *testing.T) {
	// Stores made before conv_meta was dropped from the layout still hold
	// it (empty): they open, work, and keep it.
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, bolt.SchemaVersion)
	path := writeRawStore(t, b, "users", "conv_meta")
	db, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open a store with the retired conv_meta bucket: %v", err)
	}
	mustCreateUser(t, db, "alice")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.View(func(tx *bbolt.Tx) error {
		if tx.Bucket([]byte("conv_meta")) == nil || tx.Bucket([]byte("users")).Get([]byte("alice")) == nil {
			return errors.New("conv_meta or alice missing after reopen")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
