// Package broker assembles imqtt: the mochi server with imqtt's hook (and no
// other access hook), the MQTT, WebSocket and HTTP listeners, and the store.
//
// Invariants:
//   - New validates the configuration and opens the store; it binds nothing.
//     Start binds every enabled listener or none. Close stops accepting,
//     disconnects clients, then closes the store, in that order, so nothing
//     is acknowledged that is not committed.
//   - Every new socket must send CONNECT within Config.ConnectTimeout; a
//     panic in one connection's goroutine ends that connection only. Close
//     ends and waits for connections still being set up.
//   - No packet over the maximum packet size is held in memory; an MQTT
//     3.1.1 publish over it is read past and refused with too_large.
//   - Logs go through zerolog, mochi's included, with packet payloads
//     stripped.
package broker
