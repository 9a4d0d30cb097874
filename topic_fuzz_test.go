package imqtt_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
)

// refMatch is a naive MQTT matcher written from the specification, on
// purpose sharing no code with topic.go: '#' matches the remaining levels,
// zero or more (so "a/#" matches "a"); '+' matches exactly one level, empty
// included; a wildcard in the first level does not match a topic starting
// with '$'.
func refMatch(filter, topic string) bool {
	f := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, fl := range f {
		if fl == "#" {
			return true
		}
		if i >= len(tl) || fl != "+" && fl != tl[i] {
			return false
		}
	}
	return len(f) == len(tl)
}

// enumTopics lists every topic of 1 to depth levels over names. The empty
// topic (one empty level) is kept although MQTT forbids it as a topic name:
// the functions under test are pure level algebra and treat it so.
func enumTopics(names []string, depth int) []string {
	var out []string
	prev := []string{""}
	for d := 1; d <= depth; d++ {
		var next []string
		for _, p := range prev {
			for _, n := range names {
				if d == 1 {
					next = append(next, n)
				} else {
					next = append(next, p+"/"+n)
				}
			}
		}
		out = append(out, next...)
		prev = next
	}
	return out
}

// enumFilters lists every valid filter of 1 to depth levels over names
// (which may include "+" and "#").
func enumFilters(names []string, depth int) []string {
	var out []string
	for _, f := range enumTopics(names, depth) {
		if imqtt.ValidFilter(f) {
			out = append(out, f)
		}
	}
	return out
}

// refAlphabet returns level names rich enough that brute force over topics
// built from them decides subset and overlap exactly for filters a and b:
// the base names, every literal level of a and b, and one name in neither.
func refAlphabet(a, b string) []string {
	names := []string{"a", "b", "$x", ""}
	for _, l := range append(strings.Split(a, "/"), strings.Split(b, "/")...) {
		if l != "+" && l != "#" && !slices.Contains(names, l) {
			names = append(names, l)
		}
	}
	fresh := "z"
	for slices.Contains(names, fresh) {
		fresh += "z"
	}
	return append(names, fresh)
}

// refDepth is deep enough to tell apart filters of up to n levels: one more
// level than the longer filter shows what a trailing '#' adds.
func refDepth(a, b string) int {
	return max(strings.Count(a, "/"), strings.Count(b, "/")) + 2
}

func refSubset(f, o string, names []string, depth int) bool {
	for _, tp := range enumTopics(names, depth) {
		if refMatch(f, tp) && !refMatch(o, tp) {
			return false
		}
	}
	return true
}

func refOverlap(a, b string, names []string, depth int) bool {
	for _, tp := range enumTopics(names, depth) {
		if refMatch(a, tp) && refMatch(b, tp) {
			return true
		}
	}
	return false
}

// fuzzFilterOK keeps fuzzed filters small enough for brute force.
func fuzzFilterOK(f string) bool {
	return imqtt.ValidFilter(f) && strings.Count(f, "/") < 3 && len(f) <= 64
}

var filterSeeds = [][2]string{
	{"a/#", "a"},
	{"a/#", "a/+"},
	{"#", "$x"},
	{"+/#", "$SYS/x"},
	{"$x/#", "#"},
	{"$x", "+"},
	{"+/+", "/"},
	{"a/+/#", "a/#"},
	{"telemetry/#", "telemetry/secret/#"},
	{"im/u/alice/#", "im/#"},
	{"/", "+/"},
	{"+", "#"},
}

func FuzzTopicMatch(f *testing.F) {
	for _, s := range filterSeeds {
		f.Add(s[0], s[1])
		f.Add(s[0], strings.NewReplacer("+", "q", "#", "r").Replace(s[1]))
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		got := imqtt.TopicMatch(filter, topic)
		if !imqtt.ValidFilter(filter) || topic == "" || strings.ContainsAny(topic, "+#") {
			return // only the call must not panic
		}
		if want := refMatch(filter, topic); got != want {
			t.Errorf("TopicMatch(%q, %q) = %v, reference says %v", filter, topic, got, want)
		}
	})
}

func FuzzFilterSubset(f *testing.F) {
	for _, s := range filterSeeds {
		f.Add(s[0], s[1])
		f.Add(s[1], s[0])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got := imqtt.FilterSubset(a, b)
		if !fuzzFilterOK(a) || !fuzzFilterOK(b) {
			return
		}
		if want := refSubset(a, b, refAlphabet(a, b), refDepth(a, b)); got != want {
			t.Errorf("FilterSubset(%q, %q) = %v, brute force says %v", a, b, got, want)
		}
	})
}

func FuzzFiltersOverlap(f *testing.F) {
	for _, s := range filterSeeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got := imqtt.FiltersOverlap(a, b)
		if !fuzzFilterOK(a) || !fuzzFilterOK(b) {
			return
		}
		if rev := imqtt.FiltersOverlap(b, a); rev != got {
			t.Errorf("FiltersOverlap(%q, %q) = %v but reversed %v", a, b, got, rev)
		}
		if want := refOverlap(a, b, refAlphabet(a, b), refDepth(a, b)); got != want {
			t.Errorf("FiltersOverlap(%q, %q) = %v, brute force says %v", a, b, got, want)
		}
	})
}

func FuzzParsePublishTopic(f *testing.F) {
	for _, s := range []string{
		"im/dm/bob", "im/g/team", "im/req", "im/u/x/dm/y", "im/dm/Bad", "$SYS/x",
		"telemetry/a", "im/", "im", "im/dm/", "im/g/a/b", "$", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		kind, id := imqtt.ParsePublishTopic(topic)
		// An independent statement of the classification.
		wantKind, wantID := imqtt.TopicIMOther, ""
		switch {
		case strings.HasPrefix(topic, "$"):
			wantKind = imqtt.TopicDollar
		case !strings.HasPrefix(topic, "im/"):
			wantKind = imqtt.TopicPlain
		case topic == "im/req":
			wantKind = imqtt.TopicRequest
		default:
			parts := strings.Split(topic, "/")
			if len(parts) == 3 && imqtt.ValidID(parts[2]) {
				switch parts[1] {
				case "dm":
					wantKind, wantID = imqtt.TopicDM, parts[2]
				case "g":
					wantKind, wantID = imqtt.TopicGroup, parts[2]
				}
			}
		}
		if kind != wantKind || id != wantID {
			t.Errorf("ParsePublishTopic(%q) = %d, %q; want %d, %q", topic, kind, id, wantKind, wantID)
		}
		if (kind == imqtt.TopicDM || kind == imqtt.TopicGroup) && !imqtt.ValidID(id) {
			t.Errorf("ParsePublishTopic(%q) returned invalid id %q", topic, id)
		}
	})
}

func FuzzParseConv(f *testing.F) {
	for _, s := range []string{
		"dm:alice:bob", "dm:bob:alice", "g:team", "dm:a:a", "g:", "dm::", "dm:a:b:c",
		"g:Team", "dm:a_:a0", "", "g:a:b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		a, b, g, err := imqtt.ParseConv(c)
		// Ids hold no ':', so a conversation id splits one way only.
		wantOK := false
		if rest, ok := strings.CutPrefix(c, "g:"); ok {
			wantOK = imqtt.ValidID(rest)
		} else if rest, ok := strings.CutPrefix(c, "dm:"); ok {
			p := strings.Split(rest, ":")
			wantOK = len(p) == 2 && imqtt.ValidID(p[0]) && imqtt.ValidID(p[1]) && p[0] < p[1]
		}
		if (err == nil) != wantOK {
			t.Fatalf("ParseConv(%q) = %q, %q, %q, %v; want ok=%v", c, a, b, g, err, wantOK)
		}
		if err != nil {
			if got := imqtt.InboxTopic("alice", imqtt.ConvID(c)); got != "" {
				t.Errorf("InboxTopic(alice, %q) = %q for an invalid conv", c, got)
			}
			return
		}
		if g != "" {
			if a != "" || b != "" || !imqtt.ValidID(g) || string(imqtt.GroupConv(g)) != c {
				t.Errorf("ParseConv(%q) = %q, %q, %q: does not round-trip through GroupConv", c, a, b, g)
			}
			return
		}
		if !imqtt.ValidID(a) || !imqtt.ValidID(b) || a >= b {
			t.Errorf("ParseConv(%q) = %q, %q: invalid or unordered ids", c, a, b)
		}
		if string(imqtt.DMConv(a, b)) != c || string(imqtt.DMConv(b, a)) != c {
			t.Errorf("ParseConv(%q) = %q, %q: does not round-trip through DMConv", c, a, b)
		}
		if got, want := imqtt.InboxTopic(b, imqtt.ConvID(c)), imqtt.InboxDM(b, a); got != want {
			t.Errorf("InboxTopic(%q, %q) = %q, want %q", b, c, got, want)
		}
	})
}
