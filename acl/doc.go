// Package acl decides who may subscribe to and publish on which topic, and
// who may message whom over the relationship chain.
//
// Invariants:
//   - Pure policy: no mochi, no bbolt, no logging. The only I/O is through
//     the small interfaces a caller passes in.
//   - Decisions on the publish path do not allocate.
//   - Fails closed: anything not explicitly allowed is refused. IM topics
//     (im/...) are never opened by open_topics; deny_topics beats every
//     allowance, conformance mode included.
package acl
