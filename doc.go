// Package imqtt is the domain vocabulary of the imqtt instant-messaging broker:
// user and group ids, conversation ids, messages, the topic codec of
// PROTOCOL.md section 2 and the sentinel errors every layer wraps.
//
// Invariants:
//   - This package imports the standard library only. Every other package of
//     the module may import it; it imports none of them.
//   - Functions here are pure: no I/O, no logging, no global state.
//   - Every protocol error code of PROTOCOL.md section 5 has exactly one
//     sentinel here; callers test for them with errors.Is and read the code
//     with ErrorCode.
package imqtt
