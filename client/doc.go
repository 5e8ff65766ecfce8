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
// A Client owns one logical session with the server. It dials the
// transports in Options.Transports order (WebSocket today; SSE+POST and
// long-polling will follow), says hello, and from then on keeps the session
// alive by itself: when a connection drops it reconnects with exponential
// backoff and full jitter (Options.MinBackoff, MaxBackoff) and resumes the
// session with its id, secret token and the last session seq it applied, so
// that the server sends every durable message it missed, once. Past the
// server's resume window it gets a new session and rejoins each room with
// since = the last room seq it applied: the server replays what it missed,
// or, when its log no longer reaches back, sends a snapshot and says so
// (EventResync). Close codes 4000-4099 mean reconnect; 4100-4199 are
// terminal, and so is 4004 (another connection took the session over): the
// client then stops, Done is closed and Err says why.
//
// Durable messages are acknowledged after each frame has been applied.
//
// # Outbox
//
// Patches, publishes, joins and leaves go through a bounded outbox
// (Options.MaxPending): while offline they wait there, and each patch or
// publish carries a client message id (a random per-client prefix and a
// counter) so that the server applies it once however often it is sent.
// After a reconnect every message without a verdict is sent again, in
// order. Ephemeral values are not queued: only the latest per key is kept.
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
// and one pump per room whose Events channel is in use. Close stops and
// waits for all of them. Application calls never wait for the network,
// except those that say so and take a context (Dial, Ready, Join, Leave,
// Settle, WaitSeq). Byte slices returned by the client are shared: treat
// them as read-only.
package client
