// Package bolt implements the storage interfaces on a single bbolt file,
// imqtt.db in the data directory.
//
// Invariants:
//   - The file is opened with mode 0600 and a lock timeout: a second process
//     gets imqtt.ErrStoreLocked instead of waiting forever.
//   - The meta bucket holds the schema version; Open refuses any other.
//   - Keys that order (sequence numbers, positions) are 8-byte big-endian, so
//     bbolt's byte order is numeric order and heads are found with a cursor
//     Last() instead of a scan: opening a large store costs no scan.
//   - Values handed out are copied out of the transaction; nothing returned
//     points into the mmap.
//   - Every exported method is one transaction: it changes everything it
//     names or nothing.
package bolt
