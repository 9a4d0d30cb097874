package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

const usage = `usage: imqtt-bench MODE [flags]

modes:
  provision  create users, friendships and device tokens (in a store no broker holds, or over the admin API)
  pairs      N 1:1 IM pairs (publisher -> friend), durable DMs
  soak       pairs held at a steady pace for long (default 250 pairs = 500 clients, 10 min), sampling broker RSS and goroutines
  raw        N pairs on plain MQTT topics bench/{i}, for any broker (mosquitto too)
  idle       N idle connections subscribed to their inbox: broker memory per connection (needs --pid)
  drain      one device offline while M messages are sent to it, then it reconnects and drains
  fanout     one sender, a group of K online members: time until the last member has each message
  storm      N devices connect at once: time until all are authenticated and subscribed
  table      read result JSON lines from files and print a ratio table

Users are PREFIX0, PREFIX1, ... with password PASSWORD-PREFIX+id. Pair i is
user 2i (publisher) and user 2i+1 (receiver); fanout and drain use user 0 and
its friends 1..K-1 (provision --star K).

Run "imqtt-bench MODE -h" for the flags of a mode.
`

// options holds every flag of every mode; each mode registers the ones it
// reads.
type options struct {
	mode string

	addr       string
	prefix     string
	passPrefix string
	anonymous  bool
	tokensFile string
	pid        int
	label      string
	keepalive  time.Duration
	connTO     time.Duration
	quiet      bool
	cpuprofile string

	// pairs, raw, fanout, drain
	pairs        int
	qos          int
	subQoS       int
	size         int
	rate         float64
	duration     time.Duration
	count        int
	inflight     int
	drainTimeout time.Duration
	topicPrefix  string

	// idle, storm
	conns       int
	concurrency int
	settle      time.Duration

	// drain
	publishers int

	// soak
	sampleEvery time.Duration
	statsURL    string
	flatPct     float64

	// fanout
	members int

	// provision
	store         string
	admin         string
	adminUser     string
	adminPassword string
	users         int
	star          int
	tokensOut     string
	realCost      bool
	samePassword  string
	noPairFriends bool

	// table
	base string

	runID string
}

func (o *options) user(i int) string { return fmt.Sprintf("%s%d", o.prefix, i) }

// password returns the secret user i presents: its device token when a
// tokens file was given, else its password.
func (o *options) password(id string, tokens map[string]string) string {
	if tokens != nil {
		return tokens[id]
	}
	if o.samePassword != "" {
		return o.samePassword
	}
	return o.passPrefix + id
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (o *options) common(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "addr", "127.0.0.1:1883", "broker MQTT address host:port")
	fs.StringVar(&o.prefix, "prefix", "b", "user id prefix")
	fs.StringVar(&o.passPrefix, "password-prefix", "pw-", "password of a user is this followed by its id")
	fs.StringVar(&o.samePassword, "same-password", "", "every user has this password (instead of --password-prefix + id)")
	fs.BoolVar(&o.anonymous, "anonymous", false, "connect without credentials (plain brokers)")
	fs.StringVar(&o.tokensFile, "tokens", "", "file of \"user token\" lines: authenticate with device tokens instead of passwords")
	fs.IntVar(&o.pid, "pid", 0, "broker process id, for its CPU and memory from /proc")
	fs.StringVar(&o.label, "label", "", "label of this run in the JSON line and tables")
	fs.DurationVar(&o.keepalive, "keepalive", 60*time.Second, "MQTT keepalive")
	fs.DurationVar(&o.connTO, "connect-timeout", 60*time.Second, "how long one connect and subscribe may take")
	fs.BoolVar(&o.quiet, "quiet", false, "print only the JSON line")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write the bench client's own CPU profile here")
}

func (o *options) load(fs *flag.FlagSet) {
	fs.IntVar(&o.qos, "qos", 1, "publish QoS (0 or 1)")
	fs.IntVar(&o.subQoS, "sub-qos", 1, "subscription QoS of receivers")
	fs.IntVar(&o.size, "size", 256, "message body size in bytes")
	fs.Float64Var(&o.rate, "rate", 0, "total messages per second over all publishers; 0: unpaced")
	fs.DurationVar(&o.duration, "duration", 0, "how long to send (the first of --duration and --count ends sending)")
	fs.IntVar(&o.count, "count", 0, "messages to send in total")
	fs.IntVar(&o.inflight, "inflight", 16, "unacknowledged publishes allowed per publisher")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "how long to wait after sending for the last deliveries")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	o := &options{mode: args[0], runID: newRunID()}
	fs := flag.NewFlagSet("imqtt-bench "+o.mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var do func() (*Result, error)
	switch o.mode {
	case "provision":
		fs.StringVar(&o.store, "provision-store", "", "data directory of a store no broker holds open")
		fs.StringVar(&o.admin, "admin", "", "admin API base URL, e.g. http://127.0.0.1:8080 (instead of --provision-store)")
		fs.StringVar(&o.adminUser, "admin-user", "", "operator user for the admin API")
		fs.StringVar(&o.adminPassword, "admin-password", "", "operator password for the admin API")
		fs.StringVar(&o.addr, "addr", "127.0.0.1:1883", "broker MQTT address, for friendships made over the admin API path")
		fs.StringVar(&o.prefix, "prefix", "b", "user id prefix")
		fs.StringVar(&o.passPrefix, "password-prefix", "pw-", "password of a user is this followed by its id")
		fs.StringVar(&o.samePassword, "same-password", "", "every user gets this password, hashed once (fast with --real-cost)")
		fs.IntVar(&o.users, "users", 200, "users to create: PREFIX0 .. PREFIX{N-1}")
		fs.IntVar(&o.star, "star", 0, "make user 0 friends with users 1..K-1 (fanout, drain)")
		fs.BoolVar(&o.noPairFriends, "no-pair-friends", false, "do not make users 2i and 2i+1 friends")
		fs.StringVar(&o.tokensOut, "tokens-out", "", "also create one device token per user and write \"user token\" lines here")
		fs.BoolVar(&o.realCost, "real-cost", false, "hash passwords at the real bcrypt cost (slow: about 50-100 ms each)")
		fs.DurationVar(&o.connTO, "connect-timeout", 60*time.Second, "how long one connect may take")
		do = func() (*Result, error) { return nil, provision(o, stdout) }
	case "pairs", "raw":
		o.common(fs)
		o.load(fs)
		fs.IntVar(&o.pairs, "pairs", 100, "publisher -> receiver pairs")
		fs.StringVar(&o.topicPrefix, "topic-prefix", "bench/", "raw mode: pair i uses topic PREFIX{i}")
		do = func() (*Result, error) { return runPairs(o, stderr) }
	case "soak":
		o.common(fs)
		o.load(fs)
		fs.IntVar(&o.pairs, "pairs", 250, "publisher -> receiver pairs (2 clients each)")
		fs.DurationVar(&o.sampleEvery, "sample", 10*time.Second, "how often to sample the broker")
		fs.StringVar(&o.statsURL, "stats", "", "the broker's GET /stats URL, for its goroutine count (e.g. http://127.0.0.1:8080/stats)")
		fs.Float64Var(&o.flatPct, "flat-pct", 10, "memory growth (anonymous RSS, Go heap) between the halves of a soak after warm-up that still counts as flat, in percent")
		o.topicPrefix = "bench/"
		do = func() (*Result, error) {
			if !isFlagSet(fs, "duration") {
				o.duration = 10 * time.Minute
			}
			if !isFlagSet(fs, "rate") {
				o.rate = 500
			}
			return runSoak(o, stderr)
		}
	case "idle":
		o.common(fs)
		fs.IntVar(&o.conns, "conns", 1000, "connections to open")
		fs.IntVar(&o.concurrency, "concurrency", 200, "connects in progress at once")
		fs.DurationVar(&o.settle, "settle", 2*time.Second, "wait after the last connect before reading the broker's memory")
		do = func() (*Result, error) { return runIdle(o, stderr) }
	case "storm":
		o.common(fs)
		fs.IntVar(&o.conns, "conns", 1000, "devices connecting at once")
		fs.IntVar(&o.concurrency, "concurrency", 0, "connects in progress at once; 0: all at once")
		do = func() (*Result, error) { return runStorm(o, stderr) }
	case "drain":
		o.common(fs)
		fs.IntVar(&o.count, "count", 10000, "messages sent to the offline device")
		fs.IntVar(&o.publishers, "publishers", 4, "publishers (users 1..P, friends of user 0)")
		fs.IntVar(&o.size, "size", 256, "message body size in bytes")
		fs.IntVar(&o.inflight, "inflight", 16, "unacknowledged publishes allowed per publisher")
		fs.DurationVar(&o.drainTimeout, "drain-timeout", 60*time.Second, "how long the drain may take")
		do = func() (*Result, error) { return runDrain(o, stderr) }
	case "fanout":
		o.common(fs)
		fs.IntVar(&o.members, "members", 50, "group size K, the sender included (users 0..K-1)")
		fs.IntVar(&o.count, "count", 100, "messages to send")
		fs.Float64Var(&o.rate, "rate", 10, "messages per second")
		fs.IntVar(&o.size, "size", 256, "message body size in bytes")
		fs.IntVar(&o.concurrency, "concurrency", 100, "connects in progress at once")
		fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "how long to wait after sending for the last deliveries")
		do = func() (*Result, error) { return runFanout(o, stderr) }
	case "table":
		fs.StringVar(&o.base, "base", "", "label of the row ratios are taken against (default: the first row)")
		fs.SetOutput(stderr)
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if err := table(fs.Args(), o.base, stdout); err != nil {
			fmt.Fprintf(stderr, "imqtt-bench: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "imqtt-bench: unknown mode %q\n%s", o.mode, usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imqtt-bench %s: unexpected arguments %s\n", o.mode, strings.Join(fs.Args(), " "))
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "imqtt-bench %s: %v\n", o.mode, err)
		return 2
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "imqtt-bench %s: %v\n", o.mode, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "imqtt-bench %s: %v\n", o.mode, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	res, err := do()
	if res != nil {
		res.print(stdout, o.quiet)
	}
	if err != nil {
		fmt.Fprintf(stderr, "imqtt-bench %s: %v\n", o.mode, err)
		return 1
	}
	return 0
}

func (o *options) validate() error {
	switch {
	case o.qos < 0 || o.qos > 1:
		return fmt.Errorf("--qos %d: must be 0 or 1", o.qos)
	case o.subQoS < 0 || o.subQoS > 1:
		return fmt.Errorf("--sub-qos %d: must be 0 or 1", o.subQoS)
	case o.count < 0:
		return fmt.Errorf("--count %d: must not be negative", o.count)
	case o.rate < 0:
		return fmt.Errorf("--rate %v: must not be negative", o.rate)
	case o.size < minBody:
		if o.mode == "pairs" || o.mode == "raw" || o.mode == "drain" || o.mode == "fanout" {
			return fmt.Errorf("--size %d: must be at least %d (the body carries an id and a timestamp)", o.size, minBody)
		}
	}
	switch o.mode {
	case "pairs", "raw":
		if o.pairs < 1 {
			return fmt.Errorf("--pairs %d: must be at least 1", o.pairs)
		}
		if o.count == 0 && o.duration == 0 {
			return errors.New("give --count or --duration")
		}
		if o.inflight < 1 {
			return fmt.Errorf("--inflight %d: must be at least 1", o.inflight)
		}
		if o.mode == "pairs" && o.anonymous {
			return errors.New("--anonymous: IM mode needs users")
		}
	case "soak":
		if o.pairs < 1 || o.sampleEvery <= 0 || o.inflight < 1 {
			return errors.New("--pairs and --inflight must be at least 1 and --sample positive")
		}
	case "idle", "storm":
		if o.conns < 1 {
			return fmt.Errorf("--conns %d: must be at least 1", o.conns)
		}
	case "drain":
		if o.count < 1 || o.publishers < 1 || o.inflight < 1 {
			return errors.New("--count, --publishers and --inflight must be at least 1")
		}
	case "fanout":
		if o.members < 2 {
			return fmt.Errorf("--members %d: must be at least 2", o.members)
		}
		if o.count < 1 || o.rate <= 0 {
			return errors.New("--count must be at least 1 and --rate positive")
		}
	case "provision":
		if (o.store == "") == (o.admin == "") {
			return errors.New("give exactly one of --provision-store and --admin")
		}
		if o.users < 1 {
			return fmt.Errorf("--users %d: must be at least 1", o.users)
		}
		if o.star > o.users {
			return fmt.Errorf("--star %d: more than --users %d", o.star, o.users)
		}
	}
	if o.concurrency < 0 {
		return fmt.Errorf("--concurrency %d: must not be negative", o.concurrency)
	}
	return nil
}

// isFlagSet reports whether name was given on the command line.
func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
