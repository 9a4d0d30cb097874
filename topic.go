package imqtt

import "strings"

// Topic prefixes of PROTOCOL.md section 2.
const (
	TopicRoot   = "im/"
	TopicReq    = "im/req"
	topicDM     = "im/dm/"
	topicGroup  = "im/g/"
	topicInbox  = "im/u/"
	sysPrefix   = "$SYS"
	sharePrefix = "$share/"
)

// TopicKind classifies a topic a client publishes to.
type TopicKind uint8

// Topic kinds, see ParsePublishTopic.
const (
	// TopicPlain is a topic outside im/ and $: plain MQTT, open only where
	// the operator configured open_topics.
	TopicPlain TopicKind = iota
	// TopicDM is im/dm/{peer}.
	TopicDM
	// TopicGroup is im/g/{group}.
	TopicGroup
	// TopicRequest is im/req.
	TopicRequest
	// TopicIMOther is any other im/ topic (im/u/... included): clients may
	// never publish there.
	TopicIMOther
	// TopicDollar is a topic starting with $ ($SYS and the like): clients may
	// never publish there.
	TopicDollar
)

// ParsePublishTopic classifies a publish topic name and returns the peer or
// group id for TopicDM and TopicGroup. An im/dm/ or im/g/ topic whose id is not
// a valid id is TopicIMOther. It does not allocate.
func ParsePublishTopic(t string) (TopicKind, string) {
	switch {
	case strings.HasPrefix(t, "$"):
		return TopicDollar, ""
	case !strings.HasPrefix(t, TopicRoot):
		return TopicPlain, ""
	case t == TopicReq:
		return TopicRequest, ""
	case strings.HasPrefix(t, topicDM):
		if id := t[len(topicDM):]; ValidID(id) {
			return TopicDM, id
		}
	case strings.HasPrefix(t, topicGroup):
		if id := t[len(topicGroup):]; ValidID(id) {
			return TopicGroup, id
		}
	}
	return TopicIMOther, ""
}

// InboxDM is the topic on which user me receives messages of its DM with peer.
func InboxDM(me, peer string) string { return topicInbox + me + "/dm/" + peer }

// InboxGroup is the topic on which user me receives messages of group g.
func InboxGroup(me, g string) string { return topicInbox + me + "/g/" + g }

// InboxEvents is the topic on which user me receives events.
func InboxEvents(me string) string { return topicInbox + me + "/ev" }

// InboxRes is the topic on which a device of user me receives responses.
func InboxRes(me string) string { return topicInbox + me + "/res" }

// InboxTopic is the topic of a stored message of conversation c for user me.
func InboxTopic(me string, c ConvID) string {
	a, b, g, err := ParseConv(string(c))
	switch {
	case err != nil:
		return ""
	case g != "":
		return InboxGroup(me, g)
	case a == me:
		return InboxDM(me, b)
	default:
		return InboxDM(me, a)
	}
}

// SplitShared strips the "$share/{group}/" prefix of a shared subscription
// filter (matched case-insensitively, as mochi does) and reports whether it
// was there. A malformed share ("$share/g" with no filter) returns ok=true and
// an empty filter.
func SplitShared(filter string) (inner string, shared bool) {
	if len(filter) < len(sharePrefix) || !strings.EqualFold(filter[:len(sharePrefix)], sharePrefix) {
		return filter, false
	}
	rest := filter[len(sharePrefix):]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", true
	}
	return rest[i+1:], true
}

// IsSysFilter reports whether a filter addresses the $SYS tree.
func IsSysFilter(filter string) bool {
	return filter == sysPrefix || strings.HasPrefix(filter, sysPrefix+"/")
}

// FilterWithinInbox reports whether every topic filter can match lies under
// im/u/{me}/ (im/u/{me}/# is accepted too, though it also matches im/u/{me},
// where nothing is ever published).
func FilterWithinInbox(me, filter string) bool {
	p := topicInbox + me + "/"
	if !strings.HasPrefix(filter, p) || len(filter) == len(p) {
		return false
	}
	return true
}

// FilterMayMatchIM reports whether filter can match some topic under im/.
func FilterMayMatchIM(filter string) bool {
	first, _, _ := strings.Cut(filter, "/")
	return first == "im" || first == "+" || first == "#"
}

// TopicMatch reports whether topic matches filter under MQTT rules (a
// wildcard in the first level does not match a topic starting with $).
func TopicMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore {
			return !tmore
		}
		if !tmore {
			// "a/#" matches "a".
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}

// FilterSubset reports whether every topic that filter f can match is also
// matched by filter o.
func FilterSubset(f, o string) bool {
	if dollarFirst(f) && wildFirst(o) {
		// A wildcard first level does not match $ topics.
		return false
	}
	first := true
	for {
		ol, orest, omore := strings.Cut(o, "/")
		if ol == "#" {
			return true
		}
		fl, frest, fmore := strings.Cut(f, "/")
		switch {
		case fl == "#":
			// "#" at the top matches topics of one level or more, as
			// does "+/#"; further down it also matches the parent.
			return first && ol == "+" && omore && orest == "#"
		case ol == "+":
		case fl == "+" || fl != ol:
			return false
		}
		if !fmore {
			// f ends here; o must end too, or continue only with "#".
			return !omore || orest == "#"
		}
		if !omore {
			return false
		}
		f, o, first = frest, orest, false
	}
}

func wildFirst(f string) bool   { return strings.HasPrefix(f, "+") || strings.HasPrefix(f, "#") }
func dollarFirst(f string) bool { return strings.HasPrefix(f, "$") }

// FiltersOverlap reports whether some topic matches both filters.
func FiltersOverlap(a, b string) bool {
	if dollarFirst(a) && wildFirst(b) || dollarFirst(b) && wildFirst(a) {
		return false
	}
	for {
		al, arest, amore := strings.Cut(a, "/")
		bl, brest, bmore := strings.Cut(b, "/")
		if al == "#" || bl == "#" {
			return true
		}
		if al != "+" && bl != "+" && al != bl {
			return false
		}
		switch {
		case !amore && !bmore:
			return true
		case !amore:
			return brest == "#"
		case !bmore:
			return arest == "#"
		}
		a, b = arest, brest
	}
}

// ValidFilter reports whether filter is a well-formed MQTT topic filter:
// non-empty, '#' only as the last whole level, '+' only as a whole level.
func ValidFilter(filter string) bool {
	if filter == "" {
		return false
	}
	for {
		l, rest, more := strings.Cut(filter, "/")
		if strings.ContainsAny(l, "+#") && len(l) != 1 {
			return false
		}
		if l == "#" && more {
			return false
		}
		if !more {
			return true
		}
		filter = rest
	}
}
