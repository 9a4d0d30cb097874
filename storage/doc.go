// Package storage declares the store interfaces imqtt's hooks, broker and
// command line consume, and the records they exchange.
//
// Invariants:
//   - The interfaces carry no bbolt (or any backend) types, so a distributed
//     backend (NATS JetStream is planned) can implement them unchanged.
//   - Interfaces are small and grouped by consumer: a caller asks for the
//     narrowest one it needs.
//   - Every method is safe for concurrent use. A method that changes two
//     records (a friendship, a message and its delivery entries) does so
//     atomically: all of it is durable, or none.
//   - Errors wrap the sentinels of package imqtt (ErrNoSuchUser, ErrExists,
//     ErrNotFound, ...) with the operation; test them with errors.Is.
package storage
