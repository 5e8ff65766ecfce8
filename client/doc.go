// Package client is roomwire's Go client: it connects to a roomwire server
// and uses rooms without knowing which transport carries them.
//
//	c, err := client.Dial(ctx, "https://example.com/rt", nil)
//	r, err := c.Join(ctx, "doc-42")
//	err = r.Patch(json.RawMessage(`[{"op":"add","path":"/title","value":"hi"}]`))
//	doc, version := r.Doc()
//	for ev := range r.Events() { ... }
//
// # Connection
//
// A Client owns one logical session with the server, whatever carries it.
// It says hello, and from then on keeps the session alive by itself: when a
// connection drops it reconnects with exponential backoff and full jitter
// (Options.MinBackoff, MaxBackoff) and resumes the session with its id,
// secret token and the last session seq it applied, so that the server
// sends every durable message it missed, once. Past the server's resume
// window it gets a new session and rejoins each room with since = the last
// room seq it applied: the server replays what it missed, or, when its log
// no longer reaches back, sends a snapshot and says so (EventResync). Close
// codes 4000-4099 mean reconnect; 4100-4199 are terminal, and so is 4004
// (another connection took the session over) unless this client caused it
// itself by moving the session (see Upgrade): the client then stops, Done
// is closed and Err says why.
//
// Durable messages are acknowledged after each frame has been applied. On
// SSE, where an ack costs a POST, it rides on the next message the client
// sends, or goes alone within 50 ms or after 64 messages, whichever comes
// first (docs/protocol-http.md asks for 100 ms or 64); on long-polling the
// next poll carries it.
//
// # Transports
//
// Three transports carry the same protocol (docs/PROTOCOL.md,
// docs/protocol-http.md), tried in Options.Transports order (default
// TransportWS, TransportSSE, TransportLongPoll; name one to force it):
//
//   - WebSocket ("<base>/ws").
//   - SSE+POST: hello by POST, the event stream opened with a single-use
//     ticket (a live session reconnects with a new ticket and
//     Last-Event-ID instead of a hello), client messages by POST with the
//     session secret in headers, at most one in flight.
//   - Long-polling: one poll at a time, each acknowledging what the client
//     has applied; client messages by POST.
//
// The first connection tries them in order with no delay in between: a
// proxy that does not pass WebSocket answers the handshake with an HTTP
// error (400, 502) and the client is on SSE a moment later. An SSE stream
// is trusted only once it has shown that it delivers at once: the client
// posts a ping when it opens the stream, and unless the pong arrives on the
// stream within Options.ProbeTimeout (default 2 s) a proxy is buffering it,
// and the client moves on to long-polling, resuming the session it has just
// opened. A transport that does not even answer is given up after
// Options.HandshakeTimeout (default 10 s). A reconnect starts with the
// transport that worked last.
//
// # Upgrade
//
// While on any transport but the first, the client checks for a better
// one after a random delay in [UpgradeInterval/2, UpgradeInterval*3/2]
// (Options.UpgradeInterval, default 30 s; doubling after every check that
// finds nothing, up to 8 times): a WebSocket handshake, closed before any
// hello; for SSE, a throwaway session whose stream must pass the probe.
// When one works, the client resumes its session there (hello with resume,
// or for SSE a ticket): the server hands the session over and closes the
// old connection with 4004, which this client expects; messages continue
// after the last session seq the client applied, and any the old
// connection delivered meanwhile are recognised by their session seq and
// dropped, so there is no gap and no duplicate. A long-polling connection
// stops polling while the move is under way (each poll would take the
// session back) and resumes if the move fails. Stats.Upgrades counts moves.
//
// # Reconnect storms
//
// After a drop, a client waits a random delay in [0, MinBackoff] (default
// 1 s) before its first attempt, and a client whose attempt fails waits in
// [0, 2*MinBackoff], then [0, 4*MinBackoff], up to MaxBackoff (default
// 20 s). So N clients dropped at once (a server restart, a network
// failure) make about N/MinBackoff connection attempts per second (N per
// second with the defaults), spread evenly, rather than N at once; attempts
// that fail come back spread over twice the time.
//
// # Outbox
//
// Patches, publishes, joins and leaves go through a bounded outbox
// (Options.MaxPending): while offline they wait there, and each patch or
// publish carries a client message id (a random per-client prefix and a
// counter) so that the server applies it once however often it is sent.
// After a reconnect every message without a verdict is sent again, in
// order. (One the server was still handling when the connection broke may
// end up after messages sent later: each is applied once, and every member
// sees the same order, but not necessarily the order of the sends.)
// Ephemeral values are not queued: only the latest per key is kept.
//
// # Documents
//
// Each Room holds a confirmed document, built only from what the server
// sent in room seq order, and a local view: the confirmed document with
// this client's pending patches applied. Patch applies to the local view
// at once and sends the patch with base = the confirmed version. Both sides
// apply patches with room.ApplyPatch, so the confirmed document is byte for
// byte the server's. See Room.Patch for what happens on a refusal.
//
// # Delivery model
//
// The application reads state whenever it likes (Room.Doc, Confirmed,
// Members, Ephemeral) and learns about changes from one channel per room,
// Room.Events. The client's reader never waits for the application:
//
//   - Events are kept from the join on, so none is missed before the
//     application first calls Events.
//   - Durable events (patches, publishes, presence, rejections, resyncs)
//     are queued in room order, at most Options.EventBuffer of them. When
//     the application falls further behind, newer ones are discarded and an
//     EventOverflow with the count takes their place; the room's state stays
//     exact, so the application can catch up by reading it.
//   - Ephemeral values are coalesced, latest per sender and key, and handed
//     out before the durable events waiting.
//   - The channel is closed when the room is left or the client closes.
//
// Each room with a consumer has one goroutine (the pump) blocked on the
// application; the client's reader only appends to the queue.
//
// # Concurrency
//
// Client and Room methods are safe for concurrent use. The client runs one
// goroutine that dials and then reads the connection (the only reader), one
// writer per connection (the only writer; it also acknowledges and pings),
// while on a transport that is not the best, one upgrader per connection
// (it probes and dials, and hands a new connection to the reader), and one
// pump per room whose Events channel is in use. Close stops and waits for
// all of them, and closes the idle HTTP connections of SSE and
// long-polling. Application calls never wait for the network,
// except those that say so and take a context (Dial, Ready, Join, Leave,
// Settle, WaitSeq). Byte slices returned by the client are shared: treat
// them as read-only.
package client
