package acl_test

import (
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/acl"
)

func mustTopics(t testing.TB, open, deny []string, conformance bool) *acl.Topics {
	t.Helper()
	p, err := acl.NewTopics(open, deny, conformance)
	if err != nil {
		t.Fatalf("NewTopics(%q, %q, %v): %v", open, deny, conformance, err)
	}
	return p
}

func TestNewTopicsValidation(t *testing.T) {
	tests := []struct {
		name    string
		open    []string
		deny    []string
		wantErr string // "" for success; else a part the message must contain
	}{
		{"empty", nil, nil, ""},
		{"telemetry", []string{"telemetry/#", "sensors/+/temp"}, []string{"telemetry/secret/#"}, ""},
		{"deny everything", nil, []string{"#"}, ""},
		{"deny im", nil, []string{"im/#", "$SYS/#"}, ""},
		{"open invalid", []string{"a/#/b"}, nil, `open_topics: "a/#/b"`},
		{"open empty", []string{""}, nil, "open_topics"},
		{"open partial wildcard", []string{"tele+/x"}, nil, "not a valid topic filter"},
		{"open everything", []string{"#"}, nil, `open_topics: "#"`},
		{"open plus first", []string{"+/x"}, nil, "im/"},
		{"open im", []string{"im/#"}, nil, "im/"},
		{"open im alone", []string{"im"}, nil, "im/"},
		{"open im inbox", []string{"im/u/alice/#"}, nil, "im/"},
		{"open sys", []string{"$SYS/#"}, nil, "$"},
		{"open dollar", []string{"$foo"}, nil, "$"},
		{"open share", []string{"$share/g/telemetry/#"}, nil, "$"},
		{"second open bad", []string{"telemetry/#", "im/dm/bob"}, nil, `"im/dm/bob"`},
		{"deny invalid", nil, []string{"a#"}, `deny_topics: "a#"`},
		{"deny empty", []string{"telemetry/#"}, []string{""}, "deny_topics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, conformance := range []bool{false, true} {
				p, err := acl.NewTopics(tt.open, tt.deny, conformance)
				if tt.wantErr == "" {
					if err != nil || p == nil {
						t.Errorf("conformance=%v: NewTopics = %v, %v; want a policy", conformance, p, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("conformance=%v: NewTopics accepted open=%q deny=%q", conformance, tt.open, tt.deny)
					continue
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("conformance=%v: error %q does not contain %q", conformance, err, tt.wantErr)
				}
			}
		})
	}
}

func TestConformanceFlag(t *testing.T) {
	if mustTopics(t, nil, nil, false).Conformance() {
		t.Error("Conformance() = true for a normal policy")
	}
	if !mustTopics(t, nil, nil, true).Conformance() {
		t.Error("Conformance() = false for a conformance policy")
	}
}

func TestCanSubscribeIM(t *testing.T) {
	p := mustTopics(t, nil, nil, false)
	tests := []struct {
		filter   string
		user     bool // allowed for alice, a user
		operator bool // allowed for alice, an operator
	}{
		{"im/u/alice/#", true, true},
		{"im/u/alice/+", true, true},
		{"im/u/alice/dm/bob", true, true},
		{"im/u/alice/dm/+", true, true},
		{"im/u/alice/g/team", true, true},
		{"im/u/alice/ev", true, true},
		{"im/u/alice/res", true, true},
		// Nothing is published on im/u/alice itself; FilterWithinInbox wants
		// a level below it.
		{"im/u/alice", false, false},
		{"im/u/alice/", false, false},
		{"#", false, false},
		{"+", false, false},
		{"+/#", false, false},
		{"+/u/alice/#", false, false},
		{"im/#", false, false},
		{"im/+", false, false},
		{"im/u/#", false, false},
		{"im/u/+/dm/alice", false, false},
		{"im/u/+/#", false, false},
		{"im/u/bob/#", false, false},
		{"im/u/alicex/#", false, false},
		{"im/u/alic/#", false, false},
		{"$share/g/im/u/alice/#", false, false},
		{"$share/g/im/u/alice/dm/bob", false, false},
		{"$SHARE/g/im/u/alice/#", false, false},
		{"im/dm/bob", false, false},
		{"im/dm/+", false, false},
		{"im/g/team", false, false},
		{"im/req", false, false},
		{"im", false, false},
		{"$SYS/#", false, true},
		{"$SYS/broker/clients/connected", false, true},
		{"$SYS", false, true},
		{"$share/g/$SYS/#", false, false},
		{"$foo/#", false, false},
		{"$", false, false},
		// Plain topics are closed without open_topics.
		{"telemetry/#", false, false},
		{"telemetry/a", false, false},
		// Malformed filters.
		{"", false, false},
		{"im/u/alice/#/x", false, false},
		{"im/u/alice/d+", false, false},
		{"$share/g", false, false},
		{"$share/g/", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := p.CanSubscribe("alice", imqtt.RoleUser, tt.filter); got != tt.user {
				t.Errorf("user: CanSubscribe(alice, %q) = %v, want %v", tt.filter, got, tt.user)
			}
			if got := p.CanSubscribe("alice", imqtt.RoleOperator, tt.filter); got != tt.operator {
				t.Errorf("operator: CanSubscribe(alice, %q) = %v, want %v", tt.filter, got, tt.operator)
			}
		})
	}
}

func TestCanSubscribeOpenTopics(t *testing.T) {
	p := mustTopics(t, []string{"telemetry/#", "sensors/+/temp"}, nil, false)
	tests := []struct {
		filter string
		want   bool
	}{
		{"telemetry/a", true},
		{"telemetry/#", true},
		{"telemetry/+", true},
		{"telemetry/+/x", true},
		{"telemetry", true}, // "telemetry/#" matches its parent level
		{"$share/g/telemetry/#", true},
		{"$share/g/telemetry/a/b", true},
		{"sensors/k1/temp", true},
		{"sensors/+/temp", true},
		{"sensors/+/#", false},
		{"sensors/k1/humidity", false},
		{"sensors/#", false},
		{"tele/#", false},
		{"telemetryx/a", false},
		{"#", false},
		{"+/#", false},
		{"+/a", false},
		{"other", false},
		{"$share/g/other/#", false},
		{"$share/g/#", false},
		// Opening plain topics opens nothing under im/ or $.
		{"im/u/bob/#", false},
		{"$SYS/#", false},
		{"im/u/alice/#", true},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := p.CanSubscribe("alice", imqtt.RoleUser, tt.filter); got != tt.want {
				t.Errorf("CanSubscribe(alice, %q) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestCanSubscribeDenyBeatsOpen(t *testing.T) {
	p := mustTopics(t, []string{"telemetry/#"}, []string{"telemetry/secret/#", "im/u/alice/g/+"}, false)
	tests := []struct {
		filter string
		want   bool
	}{
		{"telemetry/a", true},
		{"telemetry/a/#", true},
		{"telemetry/secret", false},
		{"telemetry/secret/x", false},
		{"telemetry/#", false},   // could match telemetry/secret/x
		{"telemetry/+/x", false}, // could match telemetry/secret/x
		{"telemetry/+", false},   // could match telemetry/secret
		{"$share/g/telemetry/#", false},
		{"$share/g/telemetry/secret/x", false},
		// deny_topics binds IM topics too.
		{"im/u/alice/dm/bob", true},
		{"im/u/alice/g/team", false},
		{"im/u/alice/#", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := p.CanSubscribe("alice", imqtt.RoleUser, tt.filter); got != tt.want {
				t.Errorf("CanSubscribe(alice, %q) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestCanSubscribeConformance(t *testing.T) {
	open := mustTopics(t, nil, nil, true)
	denied := mustTopics(t, nil, []string{"private/#"}, true)
	tests := []struct {
		filter     string
		open, deny bool
	}{
		{"#", true, false}, // "#" could match private/x
		{"+/#", true, false},
		{"public/x", true, true},
		{"public/#", true, true},
		{"private", true, false},
		{"private/x", true, false},
		{"+/x", true, false},
		{"im/u/bob/#", true, true},
		{"im/dm/bob", true, true},
		{"$SYS/#", true, true},
		{"$share/g/public/#", true, true},
		{"$share/g/private/#", true, false},
		// Conformance mode still refuses malformed filters.
		{"a/#/b", false, false},
		{"", false, false},
		{"$share/g", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := open.CanSubscribe("", imqtt.RoleUser, tt.filter); got != tt.open {
				t.Errorf("no deny: CanSubscribe(%q) = %v, want %v", tt.filter, got, tt.open)
			}
			if got := denied.CanSubscribe("", imqtt.RoleUser, tt.filter); got != tt.deny {
				t.Errorf("deny private/#: CanSubscribe(%q) = %v, want %v", tt.filter, got, tt.deny)
			}
		})
	}
}

func TestCanPublishPlain(t *testing.T) {
	normal := mustTopics(t, []string{"telemetry/#", "sensors/+/temp"}, []string{"telemetry/secret/#"}, false)
	conf := mustTopics(t, nil, []string{"telemetry/secret/#"}, true)
	tests := []struct {
		topic        string
		normal, conf bool
	}{
		{"telemetry", true, true},
		{"telemetry/a", true, true},
		{"telemetry/a/b/c", true, true},
		{"telemetry/secret", false, false},
		{"telemetry/secret/x", false, false},
		{"telemetry/secretx", true, true},
		{"sensors/k1/temp", true, true},
		{"sensors/k1/temp/x", false, true},
		{"sensors/temp", false, true},
		{"tele/a", false, true},
		{"other", false, true},
		{"/telemetry/a", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			if got := normal.CanPublishPlain(tt.topic); got != tt.normal {
				t.Errorf("normal: CanPublishPlain(%q) = %v, want %v", tt.topic, got, tt.normal)
			}
			if got := conf.CanPublishPlain(tt.topic); got != tt.conf {
				t.Errorf("conformance: CanPublishPlain(%q) = %v, want %v", tt.topic, got, tt.conf)
			}
		})
	}
	if mustTopics(t, nil, nil, false).CanPublishPlain("telemetry/a") {
		t.Error("CanPublishPlain is true with no open_topics")
	}
}

func TestCanWill(t *testing.T) {
	normal := mustTopics(t, []string{"telemetry/#"}, []string{"telemetry/secret/#"}, false)
	conf := mustTopics(t, nil, []string{"telemetry/secret/#"}, true)
	tests := []struct {
		topic        string
		normal, conf bool
	}{
		{"telemetry/a", true, true},
		{"telemetry/status/dev1", true, true},
		{"telemetry/secret/x", false, false},
		{"other", false, true},
		{"im/dm/bob", false, true},
		{"im/u/alice/ev", false, true},
		{"im/u/bob/dm/alice", false, true},
		{"im/req", false, true},
		{"im/x", false, true},
		{"$SYS/x", false, false},
		{"$foo", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			if got := normal.CanWill(tt.topic); got != tt.normal {
				t.Errorf("normal: CanWill(%q) = %v, want %v", tt.topic, got, tt.normal)
			}
			if got := conf.CanWill(tt.topic); got != tt.conf {
				t.Errorf("conformance: CanWill(%q) = %v, want %v", tt.topic, got, tt.conf)
			}
		})
	}
}

func TestCanPublishPlainDoesNotAllocate(t *testing.T) {
	p := mustTopics(t, []string{"telemetry/#", "sensors/+/temp"}, []string{"telemetry/secret/#"}, false)
	allocs := testing.AllocsPerRun(200, func() {
		p.CanPublishPlain("telemetry/dev1/temp")
		p.CanPublishPlain("telemetry/secret/x")
		p.CanPublishPlain("other/topic")
	})
	if allocs != 0 {
		t.Errorf("CanPublishPlain allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkCanPublishPlain(b *testing.B) {
	p := mustTopics(b, []string{"telemetry/#", "sensors/+/temp", "status/+"}, []string{"telemetry/secret/#"}, false)
	b.ReportAllocs()
	for b.Loop() {
		p.CanPublishPlain("sensors/dev1/temp")
	}
}
