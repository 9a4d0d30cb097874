// Package chat is imqtt's application layer: it carries out requests
// (PROTOCOL.md section 5) and accepts messages (section 3) against the store
// and the acl policy, and tells a Notifier whose delivery streams grew.
//
// It sits between hooks and {acl, storage}: hooks translate MQTT packets to
// calls here and results back to packets; nothing here knows MQTT or mochi.
//
// Invariants:
//   - A change and the events it causes commit in one transaction: a friend
//     request is stored with the target's friend.request event, a message
//     with its stream entries, or none of it is.
//   - A message is committed before Send returns nil; the caller
//     acknowledges the publish only then.
//   - Functions passed to Update check before they write, so a refusal does
//     not spoil the group commit it shares; they assign captured results
//     rather than append, since Update may run them twice.
//   - Errors returned to clients are *imqtt.Error with a message naming the
//     problem; store failures become imqtt.CodeInternal.
package chat
