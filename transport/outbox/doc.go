// Package outbox is the session plumbing every transport shares: a Registry
// of logical sessions, and Session, which implements room.Session.
//
// A Session outlives its connections. It numbers durable messages (sseq),
// keeps them until the client acknowledges them, and bounds what it keeps
// in bytes (unacknowledged durable messages plus waiting ephemeral values):
// a session over the bound is closed with room.ReasonSlowConsumer and its
// client recovers from the room log. A connection that drops detaches; a
// hello with the session's id and secret token within the resume window
// attaches a new connection, on any transport, and the writer resends
// everything after the client's ack, so nothing is lost or duplicated.
//
// # Concurrency
//
// Send, Ack, Attach, Detach, Close and Pull are safe for concurrent use and
// never block on the network. Exactly one connection is attached at a time;
// its writer goroutine is the only caller of Pull, and it waits on Wake.
// Attaching a connection closes the previous one with room.ReasonReplaced
// through its close function, which must not block. Close calls
// Hub.Disconnect, so it must not be called under a room lock (the hub closes
// slow consumers from a goroutine of their own).
package outbox
