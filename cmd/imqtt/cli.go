package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/broker"
	"github.com/imqtt/imqtt/chat"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad flags, arguments or configuration
)

const usage = `imqtt: an instant-messaging broker that speaks MQTT

Usage:
  imqtt serve [--data DIR] [--mqtt ADDR] [--ws ADDR] [--http ADDR] [--config FILE]
              [--log-level LEVEL] [--log-format json|console]
  imqtt user add NAME --password P [--role operator] [--data DIR]
  imqtt user remove NAME [--data DIR]
  imqtt user passwd NAME --password P [--data DIR]
  imqtt user list [--data DIR]
  imqtt user token NAME [--name N] [--data DIR]
  imqtt backup FILE [--data DIR]
  imqtt stats [--http ADDR]

An address of "off" disables that listener. Run "imqtt CMD --help" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer, sig <-chan os.Signal) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr, sig)
	case "user":
		return user(args[1:], stdout, stderr)
	case "backup":
		return backup(args[1:], stdout, stderr)
	case "stats":
		return stats(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "imqtt: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("user add alice --password x" and "user add --password x alice").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func serve(args []string, stderr io.Writer, sig <-chan os.Signal) int {
	fs := flag.NewFlagSet("imqtt serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML configuration `file`")
	data := fs.String("data", "", "data `directory` (default ./data)")
	mqttAddr := fs.String("mqtt", "", "MQTT/TCP listen `address` (default :1883; off disables)")
	wsAddr := fs.String("ws", "", "MQTT/WebSocket listen `address` (default :1882; off disables)")
	httpAddr := fs.String("http", "", "HTTP listen `address` (default :8080; off disables)")
	level := fs.String("log-level", "", "log `level`: trace, debug, info, warn, error (default info)")
	format := fs.String("log-format", "", "log `format`: json or console (default json)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "imqtt serve: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	cfg := broker.Default()
	if *configFile != "" {
		if cfg, err = broker.ReadConfigFile(*configFile); err != nil {
			fmt.Fprintf(stderr, "imqtt serve: %v\n", err)
			return exitUsage
		}
	}
	// Flags override the file: only those given on the command line.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data":
			cfg.Data = *data
		case "mqtt":
			cfg.Listen.MQTT = *mqttAddr
		case "ws":
			cfg.Listen.WS = *wsAddr
		case "http":
			cfg.Listen.HTTP = *httpAddr
		case "log-level":
			cfg.Log.Level = *level
		case "log-format":
			cfg.Log.Format = *format
		}
	})
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "imqtt serve: %v\n", err)
		return exitUsage
	}
	if err := cfg.CheckFiles(); err != nil {
		fmt.Fprintf(stderr, "imqtt serve: %v\n", err)
		return exitUsage
	}
	cfg.LogWriter = stderr
	if err := checkStore(cfg.Data); err != nil {
		fmt.Fprintf(stderr, "imqtt serve: %v\n", err)
		return exitError
	}
	b, err := broker.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "imqtt serve: %v\n", err)
		return storeExit(err)
	}
	if err := b.Start(); err != nil {
		fmt.Fprintf(stderr, "imqtt serve: %v\n", err)
		b.Close()
		return exitError
	}
	s := <-sig
	log := b.Logger()
	log.Info().Str("signal", s.String()).Msg("shutting down")
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(stderr, "imqtt serve: shutdown: %v\n", err)
			return exitError
		}
	case <-time.After(9 * time.Second):
		fmt.Fprintln(stderr, "imqtt serve: shutdown took too long; exiting")
		return exitError
	}
	return exitOK
}

func storeExit(err error) int {
	if errors.Is(err, imqtt.ErrStoreLocked) || errors.Is(err, imqtt.ErrStoreCorrupt) || errors.Is(err, imqtt.ErrSchema) {
		return exitError
	}
	if strings.HasPrefix(err.Error(), "config:") {
		return exitUsage
	}
	return exitError
}

func openStore(dir string, stderr io.Writer) (*bolt.DB, bool) {
	err := checkStore(dir)
	var db *bolt.DB
	if err == nil {
		db, err = bolt.OpenDir(dir, bolt.Options{})
	}
	if err != nil {
		if errors.Is(err, imqtt.ErrStoreLocked) {
			fmt.Fprintf(stderr, "imqtt: the store in %s is held by a running broker; "+
				"use the HTTP admin API (/v1/users..., see docs/OPERATIONS.md) instead, or stop the broker\n", dir)
		} else {
			fmt.Fprintf(stderr, "imqtt: %v\n", err)
		}
		return nil, false
	}
	return db, true
}

func user(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "imqtt user: missing subcommand: add, remove, passwd, list or token\n")
		return exitUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("imqtt user "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./data", "data `directory`")
	var password, role, name *string
	wantName := true
	switch sub {
	case "add":
		password = fs.String("password", "", "the user's `password` (required)")
		role = fs.String("role", "user", "`role`: user or operator")
	case "passwd":
		password = fs.String("password", "", "the new `password` (required)")
	case "token":
		name = fs.String("name", "", "a `name` for the token, e.g. the device")
	case "remove":
	case "list":
		wantName = false
	default:
		fmt.Fprintf(stderr, "imqtt user: unknown subcommand %q: add, remove, passwd, list or token\n", sub)
		return exitUsage
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	var id string
	if wantName {
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "imqtt user %s: need exactly one user NAME\n", sub)
			return exitUsage
		}
		id = pos[0]
		if err := imqtt.ValidateID(id); err != nil {
			fmt.Fprintf(stderr, "imqtt user %s: %s\n", sub, imqtt.ErrorMessage(err))
			return exitUsage
		}
	} else if len(pos) != 0 {
		fmt.Fprintf(stderr, "imqtt user %s: unexpected argument %q\n", sub, pos[0])
		return exitUsage
	}
	if password != nil {
		if *password == "" {
			fmt.Fprintf(stderr, "imqtt user %s: --password is required\n", sub)
			return exitUsage
		}
		if err := auth.ValidatePassword(*password); err != nil {
			fmt.Fprintf(stderr, "imqtt user %s: %s\n", sub, imqtt.ErrorMessage(err))
			return exitUsage
		}
	}
	var r imqtt.Role
	if role != nil {
		if r, err = imqtt.ParseRole(*role); err != nil {
			fmt.Fprintf(stderr, "imqtt user %s: %s\n", sub, imqtt.ErrorMessage(err))
			return exitUsage
		}
	}
	db, ok := openStore(*data, stderr)
	if !ok {
		return exitError
	}
	defer db.Close()
	fail := func(err error) int {
		msg := err.Error()
		switch {
		case errors.Is(err, imqtt.ErrExists):
			msg = fmt.Sprintf("user %s already exists", id)
		case errors.Is(err, imqtt.ErrNoSuchUser):
			msg = fmt.Sprintf("no such user %s", id)
		}
		fmt.Fprintf(stderr, "imqtt user %s: %s\n", sub, msg)
		return exitError
	}
	switch sub {
	case "add":
		hash, err := auth.HashPassword(*password)
		if err != nil {
			return fail(err)
		}
		if err := db.CreateUser(storage.User{ID: id, Role: r, Hash: hash}); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "user %s added (role %s)\n", id, r)
	case "remove":
		svc := chat.New(chat.Options{Store: db, Notifier: chat.Offline})
		if err := svc.RemoveUser(id); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "user %s removed\n", id)
	case "passwd":
		hash, err := auth.HashPassword(*password)
		if err != nil {
			return fail(err)
		}
		if err := db.SetPasswordHash(id, hash); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "password of %s set\n", id)
	case "list":
		users, err := db.ListUsers()
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tROLE\tCREATED")
		for _, u := range users {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", u.ID, u.Role, u.Created.UTC().Format(time.RFC3339))
		}
		tw.Flush()
	case "token":
		tid, token, hash, err := auth.NewToken()
		if err != nil {
			return fail(err)
		}
		if err := db.CreateToken(storage.Token{ID: tid, User: id, Name: *name, Hash: hash}); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stderr, "token %s created for %s; it is shown this once:\n", tid, id)
		fmt.Fprintln(stdout, token)
	}
	return exitOK
}
