package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/broker/brokertest"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// backupStore makes a store in a new directory holding users.
func backupStore(t *testing.T, users ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	db, err := bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, u := range users {
		addStoreUser(t, db, u)
	}
	return dir
}

func addStoreUser(t *testing.T, db *bolt.DB, id string) {
	t.Helper()
	h, err := auth.HashPassword("pw-" + id)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(storage.User{ID: id, Role: imqtt.RoleUser, Hash: h}); err != nil {
		t.Fatal(err)
	}
}

func runBackup(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(append([]string{"backup"}, args...), &out, &errb, nil)
	return code, out.String(), errb.String()
}

// backupUsers opens a copy, checks it and lists its users.
func backupUsers(t *testing.T, path string) []string {
	t.Helper()
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the copy does not open: %v", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Fatalf("the copy fails its check: %v", err)
	}
	us, err := db.ListUsers()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range us {
		ids = append(ids, u.ID)
	}
	return ids
}

func TestBackupUnheldStore(t *testing.T) {
	dir := backupStore(t, "alice", "bob")
	outDir := t.TempDir()
	dst := filepath.Join(outDir, "copy.db")
	code, stdout, stderr := runBackup(dst, "--data", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, dst) {
		t.Errorf("output %q does not name the copy", stdout)
	}
	if got := backupUsers(t, dst); strings.Join(got, ",") != "alice,bob" {
		t.Fatalf("users in the copy: %v", got)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("copy has mode %v; the store holds password hashes", fi.Mode().Perm())
	}

	// Again over the old copy, with the flag first.
	db, err := bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addStoreUser(t, db, "carol")
	db.Close()
	if code, _, stderr := runBackup("--data", dir, dst); code != exitOK {
		t.Fatalf("second backup: exit %d: %s", code, stderr)
	}
	if got := backupUsers(t, dst); strings.Join(got, ",") != "alice,bob,carol" {
		t.Fatalf("users in the new copy: %v", got)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
		t.Errorf("left behind in %s: %v", outDir, ents)
	}
	// The store itself is still usable for writing.
	db, err = bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		t.Fatalf("store after backup: %v", err)
	}
	db.Close()
}

func TestBackupHeldStore(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Users("alice")
	// A read-only open takes bbolt's shared lock, which the broker's
	// exclusive one excludes: it times out rather than reading under a
	// writer.
	if _, err := bolt.OpenDir(b.Dir, bolt.Options{ReadOnly: true}); !errors.Is(err, imqtt.ErrStoreLocked) {
		t.Fatalf("read-only open of a held store: %v, want ErrStoreLocked", err)
	}
	dst := filepath.Join(t.TempDir(), "copy.db")
	code, stdout, stderr := runBackup(dst, "--data", b.Dir)
	if code != exitError {
		t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, exitError, stdout, stderr)
	}
	want := "curl -u OPERATOR:PASSWORD http://HOST:8080/v1/backup -o " + dst
	if !strings.Contains(stderr, want) || !strings.Contains(stderr, "running broker") {
		t.Fatalf("stderr %q does not point to %q", stderr, want)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused backup left %s: %v", dst, err)
	}
	// The broker is unharmed.
	c := b.Connect(t, "alice", false)
	c.Close()
}

func TestBackupRefused(t *testing.T) {
	dir := backupStore(t, "alice")
	outDir := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{"no file", []string{"--data", dir}, exitUsage, "exactly one FILE"},
		{"two files", []string{"a.db", "b.db", "--data", dir}, exitUsage, "exactly one FILE"},
		{"unknown flag", []string{"x.db", "--force"}, exitUsage, "-force"},
		{"file is a directory", []string{outDir, "--data", dir}, exitUsage, "is a directory"},
		{"file is the store", []string{filepath.Join(dir, bolt.FileName), "--data", dir}, exitUsage, "the store itself"},
		{"no store", []string{filepath.Join(outDir, "x.db"), "--data", filepath.Join(outDir, "nothing")}, exitError, "no store in"},
		{"unwritable destination", []string{filepath.Join(outDir, "missing", "x.db"), "--data", dir}, exitError, "create copy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runBackup(tt.args...)
			if code != tt.want || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d stderr %q; want exit %d and %q", code, stderr, tt.want, tt.wantErr)
			}
		})
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
		t.Errorf("refused backups left %v", ents)
	}
	if got := backupUsers(t, filepath.Join(dir, bolt.FileName)); strings.Join(got, ",") != "alice" {
		t.Fatalf("store changed: %v", got)
	}
	if _, err := os.Stat(filepath.Join(outDir, "nothing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backup created a data directory: %v", err)
	}
}
