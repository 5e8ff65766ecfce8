// Package redisbroker is a room.Broker over Redis (go-redis/v9 against a
// real redis-server), so that several roomwire nodes share rooms: every
// node's hub uses its own Broker, and all of them point at one Redis.
//
//	b, err := redisbroker.New(&redisbroker.Options{Redis: &redis.Options{Addr: "127.0.0.1:6379"}, Log: limits})
//	...
//	hub := room.NewHub(&room.Options{Broker: b, Log: limits})
//	... // serve; at the end: hub.Shutdown, then b.Close
//
// # Ordering
//
// A room's seq, version, document and log live in Redis. Append runs one
// Lua script that checks the room's epoch, recognises a client message id
// committed before, compares the version (patches), increments the seq,
// stores the document and XADDs the entry to the room's stream, trimmed by
// count (MAXLEN ~) and age (MINID ~). Redis runs scripts one at a time, so
// two nodes can never fork a room. Entries reach subscribers only through
// the stream, in stream order, which is seq order: each node reads it from
// the id of the last entry it delivered, so nothing is skipped or repeated,
// and a jump in seq (the stream was trimmed past a reader that fell far
// behind, or Redis lost its data) is detected, never applied.
//
// Subscribe runs one script that returns the document, version, seq, the
// log tail and the stream id of the last entry, so the snapshot and the
// point where delivery starts are the same.
//
// # Readers
//
// By default one reader goroutine per node (Options.Readers to shard)
// reads every subscribed room's stream with one XREAD BLOCK on its own
// connection. Adding a room rings the reader's doorbell (an XADD to a
// stream of its own that the same XREAD includes), so the blocked read
// returns and is issued again with the new room; a ring that lands before
// the read is issued is not lost, because the doorbell is read from the
// last id seen. Options.ReaderPerRoom gives every room a goroutine and a
// connection instead. docs/scaling.md compares the two.
//
// # Failures
//
// Append fails with ErrUnavailable when Redis cannot be reached: the client
// gets "internal" and retries with the same cid, which Redis recognises if
// the first attempt did commit. Readers retry with backoff (up to 2 s) and
// resume from their position. A room whose state Redis lost (its epoch
// changed) is refused with ErrStateLost instead of being silently
// renumbered.
//
// # Concurrency
//
// A Broker is safe for concurrent use. Subscribers are called from reader
// goroutines, one room's entries in order, never concurrently for one
// subscription, with the broker's per-room mutex held (lock order: the
// broker's, then the Room's). Append may block on the network; callers must
// not hold locks. Every goroutine the broker starts ends by Close, which
// closes its Redis clients; a subscription's cancel stops its delivery at
// once, and a per-room reader with no room left ends.
package redisbroker
