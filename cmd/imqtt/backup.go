package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage/bolt"
)

// backup copies the store of a stopped broker to a file. A running broker
// holds the store's lock; its copy is taken over HTTP instead.
func backup(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("imqtt backup", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, "Usage: imqtt backup FILE [--data DIR]\n\nCopies the store of a broker that is not running to FILE.\n\n")
		flags.PrintDefaults()
	}
	data := flags.String("data", "./data", "data `directory` holding "+bolt.FileName)
	pos, err := parseInterspersed(flags, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprint(stderr, "imqtt backup: need exactly one FILE to write the copy to\n")
		return exitUsage
	}
	dst := pos[0]
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		fmt.Fprintf(stderr, "imqtt backup: %s is a directory; give a file name, e.g. %s\n", dst, filepath.Join(dst, bolt.FileName))
		return exitUsage
	}
	src := filepath.Join(*data, bolt.FileName)
	if same(src, dst) {
		fmt.Fprintf(stderr, "imqtt backup: %s is the store itself; give another file\n", dst)
		return exitUsage
	}
	db, err := bolt.OpenDir(*data, bolt.Options{ReadOnly: true})
	switch {
	case errors.Is(err, imqtt.ErrStoreLocked):
		fmt.Fprintf(stderr, "imqtt backup: the store %s is held by a running broker; take the backup over HTTP instead:\n"+
			"  curl -u OPERATOR:PASSWORD http://HOST:8080/v1/backup -o %s\n", src, dst)
		return exitError
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stderr, "imqtt backup: no store in %s (no %s); use --data DIR\n", *data, bolt.FileName)
		return exitError
	case err != nil:
		fmt.Fprintf(stderr, "imqtt backup: %v\n", err)
		return exitError
	}
	n, err := writeCopy(db, dst)
	db.Close()
	if err != nil {
		fmt.Fprintf(stderr, "imqtt backup: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "copied %s to %s (%d bytes)\n", src, dst, n)
	return exitOK
}

// same reports whether a and b name one existing file.
func same(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// writeCopy writes the store to a temporary file next to dst, checks the
// copy, makes it durable and only then renames it over dst: a crash or a
// full disk never leaves a half-written file under dst's name.
func writeCopy(db *bolt.DB, dst string) (n int64, err error) {
	dir := filepath.Dir(dst)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("create copy: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600, which is right: the store holds
	// password hashes and private messages.
	if n, err = db.WriteBackup(tmp); err != nil {
		return n, err
	}
	if err = tmp.Sync(); err != nil {
		return n, fmt.Errorf("sync copy: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return n, fmt.Errorf("close copy: %w", err)
	}
	if err = checkCopy(tmp.Name()); err != nil {
		return n, err
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return n, fmt.Errorf("rename copy: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if d, derr := os.Open(dir); derr == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return n, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return n, nil
}

// checkCopy opens the written copy and runs bbolt's consistency check on it.
func checkCopy(path string) error {
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("the copy does not open: %w", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return fmt.Errorf("the copy fails its check: %w", err)
	}
	return nil
}
