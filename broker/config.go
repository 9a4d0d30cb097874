package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imqtt/imqtt/acl"
)

// Config is the broker's configuration. Its YAML form is the configuration
// file of PROTOCOL.md section 8; Default returns every default.
type Config struct {
	// Data is the data directory; the store is Data/imqtt.db.
	Data   string `yaml:"data"`
	Listen Listen `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
	// DMPolicy is "friends" (DMs need a friendship) or "anyone".
	DMPolicy string `yaml:"dm_policy"`
	// MaxPayload is the largest IM message payload in bytes.
	MaxPayload int     `yaml:"max_payload"`
	Backlog    Backlog `yaml:"backlog"`
	// OpenTopics are filters outside im/ every user may use.
	OpenTopics []string `yaml:"open_topics"`
	// DenyTopics are filters refused to everyone.
	DenyTopics []string `yaml:"deny_topics"`
	Limits     Limits   `yaml:"limits"`
	Log        Log      `yaml:"log"`
	// Conformance turns on plain MQTT for test suites; loopback only.
	Conformance bool `yaml:"conformance"`
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxKeepalive caps the MQTT keepalive in seconds; 0 or more than this
	// gets this.
	MaxKeepalive uint16 `yaml:"max_keepalive"`
	// MaxClients caps connections broker-wide.
	MaxClients int64 `yaml:"max_clients"`
	// MaxGroupMembers caps a group's size.
	MaxGroupMembers int `yaml:"max_group_members"`
	// SubscribeGrace is how long after a SUBSCRIBE a device's delivery
	// waits at a backlog entry none of its subscriptions match yet, before
	// passing it over: a client that subscribes topic by topic gets its
	// whole backlog. 0 passes such entries over at once.
	SubscribeGrace time.Duration `yaml:"subscribe_grace"`

	// LogWriter receives the logs; nil means os.Stderr. Not in YAML.
	LogWriter io.Writer `yaml:"-"`
}

// Listen holds listener addresses; "" or "off" disables one.
type Listen struct {
	MQTT string `yaml:"mqtt"`
	WS   string `yaml:"ws"`
	HTTP string `yaml:"http"`
}

// TLS names a certificate and key; both set turns on TLS for MQTT and WS.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Backlog bounds what a device that was away gets on return.
type Backlog struct {
	MaxEntries int           `yaml:"max_entries"`
	MaxAge     time.Duration `yaml:"max_age"`
}

// Limits are per user unless said otherwise.
type Limits struct {
	MessagesPerSecond      float64 `yaml:"messages_per_second"`
	RequestsPerSecond      float64 `yaml:"requests_per_second"`
	ConnectionsPerUser     int     `yaml:"connections_per_user"`
	SubscriptionsPerClient int     `yaml:"subscriptions_per_client"`
}

// Log configures logging.
type Log struct {
	// Level is a zerolog level: trace, debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is json (the default, PROTOCOL.md section 8) or console; ""
	// picks console on a terminal, else json.
	Format string `yaml:"format"`
}

// Default returns the configuration of PROTOCOL.md section 8.
func Default() Config {
	return Config{
		Data:            "./data",
		Listen:          Listen{MQTT: ":1883", WS: ":1882", HTTP: ":8080"},
		DMPolicy:        "friends",
		MaxPayload:      65536,
		Backlog:         Backlog{MaxEntries: 10000, MaxAge: 720 * time.Hour},
		Limits:          Limits{MessagesPerSecond: 100, RequestsPerSecond: 50, ConnectionsPerUser: 10, SubscriptionsPerClient: 100},
		Log:             Log{Level: "info", Format: "json"},
		ConnectTimeout:  10 * time.Second,
		MaxKeepalive:    300,
		MaxClients:      100000,
		MaxGroupMembers: 500,
		SubscribeGrace:  5 * time.Second,
	}
}

// LoadConfigFile reads a YAML configuration over the defaults. Unknown keys
// and bad values are errors naming the key.
func LoadConfigFile(path string) (Config, error) {
	c, err := ReadConfigFile(path)
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ReadConfigFile is LoadConfigFile without the final Validate, for callers
// that change the configuration (command-line flags) before validating it.
// Keys and value types are still checked.
func ReadConfigFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := decodeConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig reads YAML over the defaults and validates the result.
func ParseConfig(b []byte) (Config, error) {
	c, err := decodeConfig(b)
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// decodeConfig reads YAML over the defaults, checking keys and value types.
func decodeConfig(b []byte) (Config, error) {
	c := Default()
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Config{}, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) > 0 {
		// Check every key and value against Config's types first: yaml's
		// own errors name a line, not the key, and it truncates 1.5 into
		// an int without a word.
		if err := checkNode(doc.Content[0], reflect.TypeOf(c), ""); err != nil {
			return Config{}, err
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second document would be silently ignored.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("configuration: more than one YAML document (---); give one")
	}
	return c, nil
}

// Disabled reports whether a listener address turns that listener off.
func Disabled(addr string) bool { return addr == "" || addr == "off" }

// Validate checks every value and names the key of the first bad one.
func (c *Config) Validate() error {
	if c.Data == "" {
		return errors.New("data: must not be empty")
	}
	for _, l := range []struct{ key, addr string }{{"listen.mqtt", c.Listen.MQTT}, {"listen.ws", c.Listen.WS}, {"listen.http", c.Listen.HTTP}} {
		if Disabled(l.addr) {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return fmt.Errorf("%s: %q is not host:port (or off): %v", l.key, l.addr, err)
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("tls: cert and key must be set together")
	}
	switch c.DMPolicy {
	case "friends", "anyone":
	default:
		return fmt.Errorf("dm_policy: %q must be friends or anyone", c.DMPolicy)
	}
	if c.MaxPayload < 1 || c.MaxPayload > 16<<20 {
		return fmt.Errorf("max_payload: %d must be between 1 and 16777216", c.MaxPayload)
	}
	if c.Backlog.MaxEntries < 1 {
		return fmt.Errorf("backlog.max_entries: %d must be at least 1", c.Backlog.MaxEntries)
	}
	if c.Backlog.MaxAge < time.Second {
		return fmt.Errorf("backlog.max_age: %s must be at least 1s", c.Backlog.MaxAge)
	}
	if _, err := acl.NewTopics(c.OpenTopics, c.DenyTopics, c.Conformance); err != nil {
		return err
	}
	if !(c.Limits.MessagesPerSecond > 0) || math.IsInf(c.Limits.MessagesPerSecond, 0) {
		return fmt.Errorf("limits.messages_per_second: %v must be a positive number", c.Limits.MessagesPerSecond)
	}
	if !(c.Limits.RequestsPerSecond > 0) || math.IsInf(c.Limits.RequestsPerSecond, 0) {
		return fmt.Errorf("limits.requests_per_second: %v must be a positive number", c.Limits.RequestsPerSecond)
	}
	if c.Limits.ConnectionsPerUser < 1 {
		return fmt.Errorf("limits.connections_per_user: %d must be at least 1", c.Limits.ConnectionsPerUser)
	}
	if c.Limits.SubscriptionsPerClient < 1 {
		return fmt.Errorf("limits.subscriptions_per_client: %d must be at least 1", c.Limits.SubscriptionsPerClient)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	switch c.Log.Format {
	case "", "json", "console":
	default:
		return fmt.Errorf("log.format: %q must be json or console", c.Log.Format)
	}
	if c.ConnectTimeout < 100*time.Millisecond {
		return fmt.Errorf("connect_timeout: %s must be at least 100ms", c.ConnectTimeout)
	}
	if c.MaxKeepalive < 5 {
		return fmt.Errorf("max_keepalive: %d must be at least 5", c.MaxKeepalive)
	}
	if c.MaxGroupMembers < 2 || c.MaxGroupMembers > 100000 {
		return fmt.Errorf("max_group_members: %d must be between 2 and 100000", c.MaxGroupMembers)
	}
	if c.SubscribeGrace < 0 || c.SubscribeGrace > time.Minute {
		return fmt.Errorf("subscribe_grace: %s must be between 0s and 1m", c.SubscribeGrace)
	}
	if c.MaxClients < 1 {
		return fmt.Errorf("max_clients: %d must be at least 1", c.MaxClients)
	}
	if c.Conformance {
		for _, l := range []struct{ key, addr string }{{"listen.mqtt", c.Listen.MQTT}, {"listen.ws", c.Listen.WS}, {"listen.http", c.Listen.HTTP}} {
			if !Disabled(l.addr) && !loopback(l.addr) {
				return fmt.Errorf("conformance: refused because %s %q is not a loopback address", l.key, l.addr)
			}
		}
	}
	return nil
}

// CheckFiles checks what Validate does not read: the TLS certificate and
// key files, so that `serve` can refuse a missing or bad one as a
// configuration error naming the keys rather than fail at Start.
func (c Config) CheckFiles() error {
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
		return fmt.Errorf("tls.cert/tls.key: %q and %q: %w", c.TLS.Cert, c.TLS.Key, err)
	}
	return nil
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkNode checks a YAML node against the Go type it will be decoded into
// and names the key (path) of the first mismatch or unknown key.
func checkNode(n *yaml.Node, t reflect.Type, path string) error {
	key := path
	if key == "" {
		key = "configuration"
	}
	if n.Kind == yaml.AliasNode {
		return fmt.Errorf("%s: YAML aliases are not supported", key)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an empty value keeps the default
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: must be a duration such as 10s or 720h", key)
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return fmt.Errorf("%s: %q is not a duration such as 10s or 720h", key, n.Value)
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s: must be a mapping of keys", key)
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			f, ok := fields[k]
			if !ok {
				return fmt.Errorf("%s: unknown key", sub)
			}
			if err := checkNode(n.Content[i+1], f.Type, sub); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: must be a list", key)
		}
		for i, e := range n.Content {
			if err := checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: must be a single value", key)
	}
	switch t.Kind() {
	case reflect.String:
		return nil
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return fmt.Errorf("%s: %q must be true or false", key, n.Value)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if _, err := strconv.ParseInt(n.Value, 0, t.Bits()); n.Tag != "!!int" || err != nil {
			return fmt.Errorf("%s: %q must be a whole number", key, n.Value)
		}
	case reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		if _, err := strconv.ParseUint(n.Value, 0, t.Bits()); n.Tag != "!!int" || err != nil {
			return fmt.Errorf("%s: %q must be a whole number from 0 to %d", key, n.Value, uint64(1)<<t.Bits()-1)
		}
	case reflect.Float64:
		if n.Tag != "!!int" && n.Tag != "!!float" {
			return fmt.Errorf("%s: %q must be a number", key, n.Value)
		}
	}
	return nil
}
