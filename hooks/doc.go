// Package hooks holds imqtt's mochi hook: it translates MQTT packets into
// calls on the store and the acl policy, and their answers back into packets.
//
// Invariants:
//   - It is the only hook that provides OnConnectAuthenticate and OnACLCheck:
//     mochi ORs those across hooks, so any other allow-hook would open
//     everything. broker never adds one.
//   - OnACLCheck judges topic structure only. Refusals of publishes happen in
//     OnPublish, which acknowledges (never disconnects, never drops silently)
//     and reports the error to the sending device.
//   - A client id is bound to the first user that authenticates with it; no
//     other user can take over its session.
//   - Wills are refused at CONNECT unless their topic is one the user may
//     publish to, and neutered in OnWill as a second line.
//   - A device's deliveries come from its user's stream in the store, from
//     its cursor, in order; mochi never queues or resends them. Nothing is
//     delivered before the first SUBACK (or a resumed session's connect).
//     A backlog entry no subscription matches waits out the grace after a
//     SUBSCRIBE before it is passed over; a live one is passed over at once.
//   - No payload, password or hash is ever logged.
package hooks
