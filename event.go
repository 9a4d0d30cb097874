package imqtt

import "encoding/json"

// Event types of PROTOCOL.md section 6.
const (
	EvFriendRequest      = "friend.request"
	EvFriendAdded        = "friend.added"
	EvFriendRemoved      = "friend.removed"
	EvGroupJoined        = "group.joined"
	EvGroupLeft          = "group.left"
	EvGroupMemberAdded   = "group.member_added"
	EvGroupMemberRemoved = "group.member_removed"
	EvRead               = "read"
	EvPresence           = "presence"
	EvTyping             = "typing"
)

// Limits of PROTOCOL.md sections 3 and 5, in characters.
const (
	MaxNoteLen          = 256
	MaxGroupNameLen     = 64
	MaxMessageIDLen     = 64
	MaxMessageTypeLen   = 32
	DefaultMessageType  = "text"
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 500
)

// Event is an event of PROTOCOL.md section 6, published on im/u/{me}/ev.
type Event struct {
	Type   string `json:"type"`
	TS     int64  `json:"ts"`
	From   string `json:"from,omitempty"`
	Note   string `json:"note,omitempty"`
	User   string `json:"user,omitempty"`
	Group  string `json:"group,omitempty"`
	By     string `json:"by,omitempty"`
	Conv   string `json:"conv,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Online *bool  `json:"online,omitempty"`
}

// Encode returns the event's JSON.
func (e Event) Encode() []byte {
	b, _ := json.Marshal(e)
	return b
}

// Stored reports whether events of this type are kept for offline devices.
func (e Event) Stored() bool { return e.Type != EvPresence && e.Type != EvTyping }
