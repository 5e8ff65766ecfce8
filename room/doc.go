// Package room is roomwire's transport-agnostic core: a Hub owns rooms; a
// room carries a JSON document changed by RFC 6902 patches (versioned), a
// totally ordered log of durable messages (patches and published events),
// presence, and ephemeral values such as cursors. Clients are Sessions,
// implemented by the transports; this package imports no net/http,
// WebSocket or WebRTC code.
//
// # Ordering
//
// A Broker assigns every durable message of a room its room seq and keeps
// the room log. Each Room is one node's replica: it changes only by applying
// the broker's entries in seq order, and every local member gets each entry
// in that order — the sender as an "ok" reply, the others as a broadcast —
// so acks sit in the same total order as everything else. A join reads the
// replica under the room lock, so its snapshot is atomic with the stream.
// MemoryBroker (one process) orders under a mutex and persists through a
// Store; a multi-node broker makes Append an atomic compare-and-set.
//
// # Concurrency
//
// Hub's methods are safe for concurrent use. Lock order: the broker's room
// mutex, then a Room's mutex, then a session's own; and the Hub's mutex
// before a Room's. Under a Room's mutex only state changes and non-blocking
// Session.Send calls happen: never network I/O, a broker call, or a blocking
// channel operation. A session whose queue overflows is closed with
// ReasonSlowConsumer from a goroutine of its own, never under a lock. Each
// broadcast is encoded once per room and shared by every member.
//
// # Presence
//
// A room's members are its sessions on this hub. With Options.Presence they
// span a cluster: each local join and leave is recorded with the Presence
// (outside room locks), and a room watches the other nodes' members, which
// its joined replies list and whose joins and leaves its members get as
// presence messages.
//
// # Durable and ephemeral
//
// Durable messages (patches, events, join replies, presence, errors) are
// numbered per session by the transport layer (sseq) and kept until the
// client acknowledges them, so a resumed session loses nothing. Ephemeral
// values (TypeEph) are latest-value-wins per sender and key, capped per
// member at Options.EphemeralRate with the latest value always delivered,
// never queued behind durable messages, and dropped first.
package room
