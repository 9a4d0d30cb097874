// Package auth hashes and checks passwords and device tokens.
//
// It sits beside acl, below hooks: hooks, broker and the command line all
// need the same hashing rules, and bcrypt is not stdlib, so it cannot live in
// the root package.
//
// Invariants:
//   - Passwords are hashed with bcrypt at Cost (>= 10); they are never kept,
//     returned or logged in clear.
//   - At most Concurrency bcrypt operations run at once, process-wide: a
//     flood of bad CONNECTs queues behind the semaphore instead of taking
//     every core.
//   - Device tokens carry 256 bits of randomness; only their SHA-256 is
//     stored and comparisons are constant-time, so checking one costs
//     microseconds.
package auth
