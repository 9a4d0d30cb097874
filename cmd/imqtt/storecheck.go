package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/storage/bolt"
)

// storeCheckEnv makes this binary open the store in its data directory and
// exit: the trial open of checkStore.
const storeCheckEnv = "IMQTT_INTERNAL_STORE_CHECK"

func init() {
	if dir := os.Getenv(storeCheckEnv); dir != "" {
		os.Exit(storeCheckChild(dir))
	}
}

// Exit statuses of the trial open.
const (
	checkLocked  = 3
	checkFailed  = 1
	checkSkipped = 4
)

func storeCheckChild(dir string) int {
	if _, err := os.Stat(filepath.Join(dir, bolt.FileName)); errors.Is(err, os.ErrNotExist) {
		return checkSkipped // a new store: nothing to check
	}
	db, err := bolt.OpenDir(dir, bolt.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, imqtt.ErrStoreLocked) {
			return checkLocked
		}
		return checkFailed
	}
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return checkFailed
	}
	return 0
}

// checkStore opens the store once in a child process before this process
// opens it. bbolt rebuilds its free-page list at open on a goroutine of its
// own, and a damaged page makes that goroutine panic, which no recover here
// can catch: the child dies instead, and the damage is reported as a corrupt
// store. A store that does not exist yet is not checked.
func checkStore(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return nil // cannot run the check; the open itself still runs
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), storeCheckEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &ee):
		return nil
	}
	msg := strings.TrimSpace(string(out))
	switch ee.ExitCode() {
	case checkSkipped:
		return nil
	case checkLocked:
		return fmt.Errorf("open store in %s: %w", dir, imqtt.ErrStoreLocked)
	case checkFailed:
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return errors.New(msg)
	}
	// A panic or a signal: say what it was, in a line.
	line := "the store could not be read"
	for _, l := range strings.Split(msg, "\n") {
		if r, ok := strings.CutPrefix(l, "panic: "); ok {
			line = "bbolt: " + r
			break
		}
		if strings.HasPrefix(l, "unexpected fault") || strings.HasPrefix(l, "fatal error") {
			line = "bbolt: " + l
			break
		}
	}
	return fmt.Errorf("open store %s: %w: %s", filepath.Join(dir, bolt.FileName), imqtt.ErrStoreCorrupt, line)
}
