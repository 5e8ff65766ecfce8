// Package boltstore is roomwire's embedded room.Store: room documents,
// versions, seqs and logs in one bbolt file under a data directory, so that
// a single-process server (a room.MemoryBroker over this store) loses no
// acknowledged patch or event when it restarts or is killed.
//
//	st, err := boltstore.Open(dataDir, &boltstore.Options{Log: limits})
//	...
//	defer st.Close()
//	hub := room.NewHub(&room.Options{Broker: room.NewMemoryBroker(st), Log: limits})
//
// # Durability
//
// Save returns only after the bbolt transaction holding the entry has
// committed, and bbolt syncs the file (fdatasync on Linux) before a commit
// returns. The broker acknowledges nothing before Save returns, so every
// acknowledged entry survives kill -9 and power loss, on storage that honours
// fsync. Options.UnsafeNoSync skips the sync: entries then survive a process
// crash (they are in the page cache) but not a machine crash.
//
// # Group commit
//
// One sync costs the same for one entry as for a hundred, so saves are
// committed in groups: Save queues its entry and one committer goroutine
// writes everything queued in a single transaction, then answers every
// caller. An idle store commits at once (no batching delay); under load from
// many rooms, each commit carries every save that arrived during the
// previous one. One room's saves are sequential (the broker holds the room's
// lock across Save), so a single room gets one sync per entry. See
// docs/scaling.md for measured figures.
//
// # Layout
//
// Bucket "rooms" holds one bucket per room, named by the room, with keys
// "doc" (the JSON document), "meta" (version and seq, 8 bytes each, big
// endian) and a bucket "log": key the seq (8 bytes, big endian), value the
// entry's time (unix milliseconds, 8 bytes) followed by the entry as JSON.
// Bucket "meta" holds "format" = "1". Each Save trims the room's log to
// Options.Log (count and age; the newest entry always stays). Rooms are
// never deleted.
//
// # Concurrency
//
// A Store is safe for concurrent use. Save may be called concurrently for
// different rooms (a room.MemoryBroker never overlaps calls for one room).
// The committer goroutine starts in Open and ends in Close; Close waits for
// queued saves to commit. bbolt locks the file, so a second process cannot
// open the same data directory while the first has it open.
package boltstore
