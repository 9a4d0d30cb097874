package imqtt_test

import (
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
)

func TestParsePublishTopic(t *testing.T) {
	tests := []struct {
		topic string
		kind  imqtt.TopicKind
		id    string
	}{
		{"im/dm/bob", imqtt.TopicDM, "bob"},
		{"im/dm/a.b-c_d", imqtt.TopicDM, "a.b-c_d"},
		{"im/dm/" + strings.Repeat("b", 32), imqtt.TopicDM, strings.Repeat("b", 32)},
		{"im/g/team", imqtt.TopicGroup, "team"},
		{"im/g/0", imqtt.TopicGroup, "0"},
		{"im/req", imqtt.TopicRequest, ""},
		{"im/u/x/dm/y", imqtt.TopicIMOther, ""},
		{"im/u/alice/res", imqtt.TopicIMOther, ""},
		{"im/dm/Bad", imqtt.TopicIMOther, ""},
		{"im/dm/", imqtt.TopicIMOther, ""},
		{"im/dm/bob/x", imqtt.TopicIMOther, ""},
		{"im/dm/+", imqtt.TopicIMOther, ""},
		{"im/dm/#", imqtt.TopicIMOther, ""},
		{"im/dm/_bob", imqtt.TopicIMOther, ""},
		{"im/dm/" + strings.Repeat("b", 33), imqtt.TopicIMOther, ""},
		{"im/g/", imqtt.TopicIMOther, ""},
		{"im/g/team/x", imqtt.TopicIMOther, ""},
		{"im/req/x", imqtt.TopicIMOther, ""},
		{"im/reqx", imqtt.TopicIMOther, ""},
		{"im/", imqtt.TopicIMOther, ""},
		{"im/x", imqtt.TopicIMOther, ""},
		{"im/dm", imqtt.TopicIMOther, ""},
		{"$SYS/x", imqtt.TopicDollar, ""},
		{"$SYS", imqtt.TopicDollar, ""},
		{"$foo/im/dm/bob", imqtt.TopicDollar, ""},
		{"$", imqtt.TopicDollar, ""},
		{"telemetry/a", imqtt.TopicPlain, ""},
		{"im", imqtt.TopicPlain, ""},
		{"imx/dm/bob", imqtt.TopicPlain, ""},
		{"IM/dm/bob", imqtt.TopicPlain, ""},
		{"/im/dm/bob", imqtt.TopicPlain, ""},
		{"x/$SYS", imqtt.TopicPlain, ""},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			kind, id := imqtt.ParsePublishTopic(tt.topic)
			if kind != tt.kind || id != tt.id {
				t.Errorf("ParsePublishTopic(%q) = %d, %q; want %d, %q", tt.topic, kind, id, tt.kind, tt.id)
			}
		})
	}
}

func TestParsePublishTopicDoesNotAllocate(t *testing.T) {
	topics := []string{"im/dm/bob", "im/g/team", "im/req", "im/u/x/dm/y", "$SYS/x", "telemetry/a"}
	allocs := testing.AllocsPerRun(100, func() {
		for _, tp := range topics {
			imqtt.ParsePublishTopic(tp)
		}
	})
	if allocs != 0 {
		t.Errorf("ParsePublishTopic allocates %v times per run, want 0", allocs)
	}
}

func TestInboxTopics(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"InboxDM", imqtt.InboxDM("alice", "bob"), "im/u/alice/dm/bob"},
		{"InboxGroup", imqtt.InboxGroup("alice", "team"), "im/u/alice/g/team"},
		{"InboxEvents", imqtt.InboxEvents("alice"), "im/u/alice/ev"},
		{"InboxRes", imqtt.InboxRes("alice"), "im/u/alice/res"},
		{"InboxTopic dm lower", imqtt.InboxTopic("alice", imqtt.DMConv("alice", "bob")), "im/u/alice/dm/bob"},
		{"InboxTopic dm higher", imqtt.InboxTopic("bob", imqtt.DMConv("alice", "bob")), "im/u/bob/dm/alice"},
		{"InboxTopic group", imqtt.InboxTopic("alice", imqtt.GroupConv("team")), "im/u/alice/g/team"},
		{"InboxTopic invalid", imqtt.InboxTopic("alice", "dm:bob:alice"), ""},
		{"InboxTopic garbage", imqtt.InboxTopic("alice", "x"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	// Every inbox topic of a user must be inside the filter clients are told
	// to subscribe to.
	for _, tp := range []string{
		imqtt.InboxDM("alice", "bob"), imqtt.InboxGroup("alice", "team"),
		imqtt.InboxEvents("alice"), imqtt.InboxRes("alice"),
	} {
		if !imqtt.TopicMatch("im/u/alice/#", tp) {
			t.Errorf("%q is not matched by im/u/alice/#", tp)
		}
		if !imqtt.FilterWithinInbox("alice", tp) {
			t.Errorf("FilterWithinInbox(alice, %q) = false", tp)
		}
	}
}

func TestSplitShared(t *testing.T) {
	tests := []struct {
		filter string
		inner  string
		shared bool
	}{
		{"$share/g/telemetry/#", "telemetry/#", true},
		{"$share/g/im/u/alice/#", "im/u/alice/#", true},
		{"$SHARE/g/a", "a", true},
		{"$Share/grp/a/b", "a/b", true},
		{"$share/g/", "", true},
		{"$share/g", "", true},
		{"$share/", "", true},
		{"$share//a", "a", true},
		{"$share/g/$SYS/#", "$SYS/#", true},
		{"$share", "$share", false},
		{"$sharex/g/a", "$sharex/g/a", false},
		{"share/g/a", "share/g/a", false},
		{"a/$share/g/b", "a/$share/g/b", false},
		{"#", "#", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			inner, shared := imqtt.SplitShared(tt.filter)
			if inner != tt.inner || shared != tt.shared {
				t.Errorf("SplitShared(%q) = %q, %v; want %q, %v", tt.filter, inner, shared, tt.inner, tt.shared)
			}
		})
	}
}

func TestIsSysFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"$SYS", true},
		{"$SYS/#", true},
		{"$SYS/broker/uptime", true},
		{"$SYSX/#", false},
		{"$sys/#", false},
		{"#", false},
		{"+/#", false},
		{"a/$SYS", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := imqtt.IsSysFilter(tt.filter); got != tt.want {
				t.Errorf("IsSysFilter(%q) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestFilterWithinInbox(t *testing.T) {
	tests := []struct {
		me, filter string
		want       bool
	}{
		{"alice", "im/u/alice/#", true},
		{"alice", "im/u/alice/+", true},
		{"alice", "im/u/alice/dm/bob", true},
		{"alice", "im/u/alice/dm/+", true},
		{"alice", "im/u/alice/ev", true},
		{"alice", "im/u/alice/+/+", true},
		{"alice", "im/u/alice", false},
		{"alice", "im/u/alice/", false},
		{"alice", "im/u/alicex/#", false},
		{"alice", "im/u/alic/#", false},
		{"alic", "im/u/alice/#", false},
		{"alice", "im/u/bob/#", false},
		{"alice", "im/u/+/#", false},
		{"alice", "im/u/+/dm/alice", false},
		{"alice", "im/u/#", false},
		{"alice", "im/#", false},
		{"alice", "#", false},
		{"alice", "+/u/alice/#", false},
		{"alice", "$share/g/im/u/alice/#", false},
		{"alice", "IM/u/alice/#", false},
	}
	for _, tt := range tests {
		t.Run(tt.me+":"+tt.filter, func(t *testing.T) {
			if got := imqtt.FilterWithinInbox(tt.me, tt.filter); got != tt.want {
				t.Errorf("FilterWithinInbox(%q, %q) = %v, want %v", tt.me, tt.filter, got, tt.want)
			}
		})
	}
}

func TestFilterMayMatchIM(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"im", true},
		{"im/#", true},
		{"im/u/alice/#", true},
		{"im/dm/bob", true},
		{"#", true},
		{"+", true},
		{"+/#", true},
		{"+/u/alice/#", true},
		{"imx/#", false},
		{"i/#", false},
		{"telemetry/#", false},
		{"telemetry/im/#", false},
		{"/im/#", false},
		{"$SYS/#", false},
		{"IM/#", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := imqtt.FilterMayMatchIM(tt.filter); got != tt.want {
				t.Errorf("FilterMayMatchIM(%q) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestFilterMayMatchIMAgreesWithOverlap(t *testing.T) {
	// FilterMayMatchIM must never say false where a topic under im/ can
	// match: that would let open_topics reach IM topics.
	topics := enumTopics([]string{"im", "u", "a", "$x", "", "z"}, 4)
	for _, f := range enumFilters([]string{"im", "u", "a", "$x", "", "+", "#"}, 3) {
		if imqtt.FilterMayMatchIM(f) {
			continue
		}
		for _, tp := range topics {
			if (tp == "im" || strings.HasPrefix(tp, "im/")) && refMatch(f, tp) {
				t.Errorf("FilterMayMatchIM(%q) = false, but it matches %q", f, tp)
				break
			}
		}
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"a", true},
		{"a/b", true},
		{"#", true},
		{"+", true},
		{"+/+", true},
		{"a/#", true},
		{"a/+/b", true},
		{"+/#", true},
		{"/", true},
		{"a//b", true},
		{"/#", true},
		{"$SYS/#", true},
		{"", false},
		{"a/#/b", false},
		{"#/a", false},
		{"#/#", false},
		{"a#", false},
		{"a/b#", false},
		{"a+", false},
		{"+a/b", false},
		{"a/+b", false},
		{"++", false},
		{"##", false},
		{"a/#/", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := imqtt.ValidFilter(tt.filter); got != tt.want {
				t.Errorf("ValidFilter(%q) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestTopicMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a", "a/b", false},
		{"a/b", "a", false},
		{"a/#", "a", true}, // '#' matches the parent level too
		{"a/#", "a/b", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b", false},
		{"a/#", "ab", false},
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"#", "/", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+", "/", false},
		{"+/+", "/", true}, // '+' matches an empty level
		{"a/+", "a/", true},
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+/b", "a/b", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"/+", "/a", true},
		{"/#", "/a", true},
		{"/#", "a", false},
		{"+/#", "a", true},
		{"+/#", "a/b", true},
		// Wildcards in the first level do not match $ topics.
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"+", "$x", false},
		{"+/#", "$SYS", false},
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+", "$SYS/x", true},
		{"a/+", "a/$x", true},
		{"a/#", "a/$x", true},
	}
	for _, tt := range tests {
		t.Run(tt.filter+" "+tt.topic, func(t *testing.T) {
			if got := imqtt.TopicMatch(tt.filter, tt.topic); got != tt.want {
				t.Errorf("TopicMatch(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
			if got := refMatch(tt.filter, tt.topic); got != tt.want {
				t.Errorf("reference matcher disagrees with the table: refMatch(%q, %q) = %v", tt.filter, tt.topic, got)
			}
		})
	}
}

func TestTopicMatchDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		imqtt.TopicMatch("telemetry/+/temp/#", "telemetry/dev1/temp/c")
		imqtt.TopicMatch("#", "$SYS/x")
	})
	if allocs != 0 {
		t.Errorf("TopicMatch allocates %v times per run, want 0", allocs)
	}
}

func TestFilterSubset(t *testing.T) {
	tests := []struct {
		f, o string
		want bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a", "+", true},
		{"a", "#", true},
		{"a", "a/#", true}, // "a/#" matches "a"
		{"a/b", "a/#", true},
		{"a/#", "a/#", true},
		{"a/#", "#", true},
		{"a/#", "a/+", false}, // "a" and "a/b/c"
		{"a/+", "a/#", true},
		{"a/#", "a/+/#", false}, // "a"
		{"a/+/#", "a/#", true},
		{"+", "a", false},
		{"+", "+", true},
		{"+", "#", true},
		{"+/#", "#", true},
		{"#", "a/#", false},
		{"telemetry/#", "telemetry/#", true},
		{"telemetry/a", "telemetry/#", true},
		{"telemetry", "telemetry/#", true},
		{"tele/#", "telemetry/#", false},
		{"telemetry/+/x", "telemetry/#", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "+/+", true},
		{"+/+", "a/+", false},
		{"$SYS/x", "$SYS/#", true},
		{"$SYS/x", "#", false},
		{"$x", "+", false},
		{"#", "+/#", true},
	}
	for _, tt := range tests {
		t.Run(tt.f+" in "+tt.o, func(t *testing.T) {
			if got := imqtt.FilterSubset(tt.f, tt.o); got != tt.want {
				t.Errorf("FilterSubset(%q, %q) = %v, want %v", tt.f, tt.o, got, tt.want)
			}
		})
	}
}

func TestFiltersOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a", "+", true},
		{"a", "#", true},
		{"a", "a/#", true},
		{"a", "a/+", false},
		{"a/+", "+/b", true},
		{"a/+", "b/+", false},
		{"a/b/c", "a/#", true},
		{"a/b/c", "a/+", false},
		{"+/+", "a", false},
		{"#", "+", true},
		{"telemetry/#", "telemetry/secret/#", true},
		{"telemetry/+/x", "telemetry/secret/#", true},
		{"telemetry/a", "telemetry/secret/#", false},
		{"$SYS/#", "$SYS/x", true},
		{"#", "$SYS/#", false},
		{"+/#", "$SYS/x", false},
		{"+", "$x", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" & "+tt.b, func(t *testing.T) {
			if got := imqtt.FiltersOverlap(tt.a, tt.b); got != tt.want {
				t.Errorf("FiltersOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
			if got := imqtt.FiltersOverlap(tt.b, tt.a); got != tt.want {
				t.Errorf("FiltersOverlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
			}
		})
	}
}

// TestFilterRelationsExhaustive checks TopicMatch, FilterSubset and
// FiltersOverlap on every valid filter of up to 3 levels over a tiny
// alphabet against brute force over every topic of up to 4 levels.
func TestFilterRelationsExhaustive(t *testing.T) {
	levels := []string{"a", "b", "$x", ""}
	filters := enumFilters(append(levels, "+", "#"), 3)
	topics := enumTopics(levels, 4)

	// matches[i] is the set of topics filter i matches, by the reference.
	matches := make([][]bool, len(filters))
	mismatches := 0
	report := func(format string, args ...any) {
		t.Helper()
		mismatches++
		if mismatches <= 30 {
			t.Errorf(format, args...)
		}
	}
	for i, f := range filters {
		matches[i] = make([]bool, len(topics))
		for j, tp := range topics {
			want := refMatch(f, tp)
			matches[i][j] = want
			if got := imqtt.TopicMatch(f, tp); got != want {
				report("TopicMatch(%q, %q) = %v, reference says %v", f, tp, got, want)
			}
		}
	}
	for i, f := range filters {
		for k, o := range filters {
			subset, overlap := true, false
			for j := range topics {
				if matches[i][j] && !matches[k][j] {
					subset = false
				}
				if matches[i][j] && matches[k][j] {
					overlap = true
				}
			}
			if got := imqtt.FilterSubset(f, o); got != subset {
				report("FilterSubset(%q, %q) = %v, brute force says %v", f, o, got, subset)
			}
			if got := imqtt.FiltersOverlap(f, o); got != overlap {
				report("FiltersOverlap(%q, %q) = %v, brute force says %v", f, o, got, overlap)
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d mismatches in all (%d filters, %d topics)", mismatches, len(filters), len(topics))
	}
}

func TestReferenceSelfCheck(t *testing.T) {
	// The reference must know the MQTT rules before it can judge anything.
	for _, c := range []struct {
		f, tp string
		want  bool
	}{
		{"a/#", "a", true},
		{"+", "", true},
		{"+/+", "/", true},
		{"+", "a/b", false},
		{"#", "$x", false},
		{"+/#", "$x/a", false},
		{"$x/#", "$x", true},
		{"a/+", "a/$x", true},
	} {
		if got := refMatch(c.f, c.tp); got != c.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v", c.f, c.tp, got, c.want)
		}
	}
	if n := len(enumFilters([]string{"a", "+", "#"}, 2)); n != 3+2*3 {
		t.Errorf("enumFilters gives %d filters, want 9", n)
	}
	if n := len(enumTopics([]string{"a", ""}, 2)); n != 2+4 {
		t.Errorf("enumTopics gives %d topics, want 6", n)
	}
}
