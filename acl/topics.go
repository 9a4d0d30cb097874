package acl

import (
	"fmt"
	"strings"

	"github.com/imqtt/imqtt"
)

// Topics decides on topic structure: which filters a user may subscribe to,
// which topics it may publish to. It is immutable after NewTopics.
type Topics struct {
	open        []string
	deny        []string
	conformance bool
}

// NewTopics validates the configured filters and returns the policy.
// open_topics may not reach into im/ or $ topics.
func NewTopics(open, deny []string, conformance bool) (*Topics, error) {
	for _, f := range open {
		if !imqtt.ValidFilter(f) {
			return nil, fmt.Errorf("open_topics: %q is not a valid topic filter", f)
		}
		if strings.HasPrefix(f, "$") || imqtt.FilterMayMatchIM(f) {
			return nil, fmt.Errorf("open_topics: %q may match im/ or $ topics, which are never open", f)
		}
	}
	for _, f := range deny {
		if !imqtt.ValidFilter(f) {
			return nil, fmt.Errorf("deny_topics: %q is not a valid topic filter", f)
		}
	}
	return &Topics{open: open, deny: deny, conformance: conformance}, nil
}

// Conformance reports whether the plain-MQTT conformance mode is on.
func (t *Topics) Conformance() bool { return t.conformance }

func (t *Topics) denied(filter string) bool {
	for _, d := range t.deny {
		if imqtt.FiltersOverlap(filter, d) {
			return true
		}
	}
	return false
}

// CanSubscribe reports whether user (with role) may subscribe to filter. A
// topic name is a filter without wildcards, so the same rule answers the
// per-delivery read check.
func (t *Topics) CanSubscribe(user string, role imqtt.Role, filter string) bool {
	inner, shared := imqtt.SplitShared(filter)
	if inner == "" || !imqtt.ValidFilter(inner) || t.denied(inner) {
		return false
	}
	if t.conformance {
		return true
	}
	if imqtt.IsSysFilter(inner) {
		return !shared && role == imqtt.RoleOperator
	}
	if strings.HasPrefix(inner, "$") {
		return false
	}
	if imqtt.FilterMayMatchIM(inner) {
		return !shared && imqtt.FilterWithinInbox(user, inner)
	}
	for _, o := range t.open {
		if imqtt.FilterSubset(inner, o) {
			return true
		}
	}
	return false
}

// CanPublishPlain reports whether a topic outside im/ and $ (TopicPlain) is
// open for publishing. It does not allocate.
func (t *Topics) CanPublishPlain(topic string) bool {
	for _, d := range t.deny {
		if imqtt.TopicMatch(d, topic) {
			return false
		}
	}
	if t.conformance {
		return true
	}
	for _, o := range t.open {
		if imqtt.TopicMatch(o, topic) {
			return true
		}
	}
	return false
}

// CanWill reports whether a will may be set on topic: only plain topics the
// user may publish to; never im/ or $ topics.
func (t *Topics) CanWill(topic string) bool {
	if t.conformance {
		return !strings.HasPrefix(topic, "$") && t.CanPublishPlain(topic)
	}
	k, _ := imqtt.ParsePublishTopic(topic)
	return k == imqtt.TopicPlain && t.CanPublishPlain(topic)
}
