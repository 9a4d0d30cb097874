package imqtt_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/imqtt/imqtt"
)

func TestValidID(t *testing.T) {
	// PROTOCOL.md section 1: 1-32 characters from a-z 0-9 _ - ., starting
	// with a letter or digit.
	tests := []struct {
		id   string
		want bool
	}{
		{"alice", true},
		{"a", true},
		{"0", true},
		{"7bob", true},
		{"a_b-c.d", true},
		{"a_", true},
		{"a-", true},
		{"a.", true},
		{"x...", true},
		{strings.Repeat("a", 32), true},
		{"0123456789abcdefghijklmnopqrstuv", true},
		{"", false},
		{strings.Repeat("a", 33), false},
		{"_alice", false},
		{"-alice", false},
		{".alice", false},
		{"Alice", false},
		{"alicE", false},
		{"+", false},
		{"#", false},
		{"a+", false},
		{"a#", false},
		{"a/b", false},
		{"/", false},
		{"a b", false},
		{"a:b", false},
		{"a\x00", false},
		{"$sys", false},
		{"é", false},
		{"aé", false},
		{"a\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := imqtt.ValidID(tt.id); got != tt.want {
				t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
			}
			err := imqtt.ValidateID(tt.id)
			if (err == nil) != tt.want {
				t.Fatalf("ValidateID(%q) = %v, want ok=%v", tt.id, err, tt.want)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, imqtt.ErrBadRequest) {
				t.Errorf("ValidateID(%q) = %v, does not wrap ErrBadRequest", tt.id, err)
			}
			if !strings.Contains(err.Error(), imqtt.IDRule) {
				t.Errorf("ValidateID(%q) = %q, does not name the rule", tt.id, err)
			}
		})
	}
}

func TestIDRuleText(t *testing.T) {
	// The rule in error messages must be the one PROTOCOL.md states.
	for _, part := range []string{"1-32", "a-z 0-9 _ - .", "letter or digit"} {
		if !strings.Contains(imqtt.IDRule, part) {
			t.Errorf("IDRule %q lacks %q", imqtt.IDRule, part)
		}
	}
	if imqtt.MaxIDLen != 32 {
		t.Errorf("MaxIDLen = %d, want 32", imqtt.MaxIDLen)
	}
}

func TestValidateIDTruncatesLongInput(t *testing.T) {
	err := imqtt.ValidateID(strings.Repeat("x", 10000))
	if err == nil {
		t.Fatal("10000-character id accepted")
	}
	if len(err.Error()) > 300 {
		t.Errorf("error message is %d bytes long; a huge id should be truncated", len(err.Error()))
	}
}

func TestValidIDDoesNotAllocate(t *testing.T) {
	ids := []string{"alice", "_bad", strings.Repeat("a", 40)}
	allocs := testing.AllocsPerRun(100, func() {
		for _, id := range ids {
			imqtt.ValidID(id)
		}
	})
	if allocs != 0 {
		t.Errorf("ValidID allocates %v times per run, want 0", allocs)
	}
}

func TestParseRole(t *testing.T) {
	tests := []struct {
		in      string
		want    imqtt.Role
		wantErr bool
	}{
		{"", imqtt.RoleUser, false},
		{"user", imqtt.RoleUser, false},
		{"operator", imqtt.RoleOperator, false},
		{"Operator", "", true},
		{"admin", "", true},
		{"user ", "", true},
		{strings.Repeat("o", 100), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := imqtt.ParseRole(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseRole(%q) = %q, want an error", tt.in, got)
				}
				if !errors.Is(err, imqtt.ErrBadRequest) {
					t.Errorf("ParseRole(%q) error %v does not wrap ErrBadRequest", tt.in, err)
				}
				if !strings.Contains(err.Error(), "operator") {
					t.Errorf("ParseRole(%q) error %q does not name the valid roles", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseRole(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDMConvByteOrder(t *testing.T) {
	tests := []struct {
		a, b string
		want imqtt.ConvID
	}{
		{"alice", "bob", "dm:alice:bob"},
		{"bob", "alice", "dm:alice:bob"},
		{"a", "a1", "dm:a:a1"},
		{"a1", "a", "dm:a:a1"},
		{"z", "10", "dm:10:z"},
		// Byte order: '-' < '.' < '0' < '_' < 'a'.
		{"a_", "a0", "dm:a0:a_"},
		{"a.", "a-", "dm:a-:a."},
		{"a0", "a.", "dm:a.:a0"},
		{"ab", "a_", "dm:a_:ab"},
	}
	for _, tt := range tests {
		t.Run(tt.a+","+tt.b, func(t *testing.T) {
			if got := imqtt.DMConv(tt.a, tt.b); got != tt.want {
				t.Errorf("DMConv(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
			}
			if got := imqtt.DMConv(tt.b, tt.a); got != tt.want {
				t.Errorf("DMConv(%q, %q) = %q, want %q", tt.b, tt.a, got, tt.want)
			}
		})
	}
	if got := imqtt.GroupConv("team"); got != "g:team" {
		t.Errorf("GroupConv(team) = %q", got)
	}
	if got := imqtt.GroupConv("team").String(); got != "g:team" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseConvRoundTrip(t *testing.T) {
	ids := []string{"alice", "bob", "a", "a1", "a_", "a0", "a.", "a-", "z", "10", strings.Repeat("q", 32)}
	for _, x := range ids {
		for _, y := range ids {
			if x == y {
				continue
			}
			c := imqtt.DMConv(x, y)
			a, b, g, err := imqtt.ParseConv(string(c))
			if err != nil {
				t.Errorf("ParseConv(%q): %v", c, err)
				continue
			}
			lo, hi := x, y
			if hi < lo {
				lo, hi = hi, lo
			}
			if a != lo || b != hi || g != "" {
				t.Errorf("ParseConv(%q) = %q, %q, %q; want %q, %q, \"\"", c, a, b, g, lo, hi)
			}
		}
		c := imqtt.GroupConv(x)
		a, b, g, err := imqtt.ParseConv(string(c))
		if err != nil || a != "" || b != "" || g != x {
			t.Errorf("ParseConv(%q) = %q, %q, %q, %v; want group %q", c, a, b, g, err, x)
		}
	}
}

func TestParseConvRejects(t *testing.T) {
	for _, c := range []string{
		"",
		"g:",
		"g",
		"dm:",
		"dm",
		"dm:alice",
		"dm:alice:",
		"dm::bob",
		"dm:bob:alice", // not in byte order
		"dm:alice:alice",
		"dm:alice:bob:carol",
		"dm:Alice:bob",
		"dm:alice:Bob",
		"dm:_a:bob",
		"dm:alice:b/c",
		"dm:alice:" + strings.Repeat("b", 33),
		"g:Team",
		"g:_team",
		"g:te/am",
		"g:team:x",
		"g:" + strings.Repeat("t", 33),
		"G:team",
		"DM:alice:bob",
		"x:team",
		"team",
		" g:team",
		"g:team ",
	} {
		t.Run(c, func(t *testing.T) {
			a, b, g, err := imqtt.ParseConv(c)
			if err == nil {
				t.Fatalf("ParseConv(%q) = %q, %q, %q; want an error", c, a, b, g)
			}
			if !errors.Is(err, imqtt.ErrBadRequest) {
				t.Errorf("ParseConv(%q) error %v does not wrap ErrBadRequest", c, err)
			}
			if a != "" || b != "" || g != "" {
				t.Errorf("ParseConv(%q) returned parts %q, %q, %q with its error", c, a, b, g)
			}
		})
	}
}
