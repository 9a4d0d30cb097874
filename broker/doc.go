// Package broker assembles imqtt: the mochi server with imqtt's hook (and no
// other access hook), the MQTT, WebSocket and HTTP listeners, and the store.
//
// Invariants:
//   - New validates the configuration and opens the store; it binds nothing.
//     Start binds every enabled listener or none. Close stops accepting,
//     disconnects clients, then closes the store, in that order, so nothing
//     is acknowledged that is not committed.
//   - Every new socket must send CONNECT within Config.ConnectTimeout; a
//     panic in one connection's goroutine ends that connection only.
//   - Logs go through zerolog, mochi's included, with packet payloads
//     stripped.
package broker
