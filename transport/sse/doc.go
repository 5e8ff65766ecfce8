// Package sse carries roomwire sessions over Server-Sent Events for
// server-to-client messages and HTTP POST for client-to-server messages,
// for clients behind proxies that strip WebSocket upgrades.
//
// A Handler serves five endpoints, named by the last element of the request
// path wherever it is mounted (transport.Server mounts it under /sse/):
//
//	POST hello   hello envelope -> welcome, plus a ticket for the stream
//	POST ticket  (session headers) -> a fresh single-use stream ticket
//	GET  events  ?ticket=... -> text/event-stream of the session's messages
//	POST send    (session headers) newline-separated client messages
//	POST close   (session headers) end the session
//
// The session secret travels only in request headers; EventSource cannot
// set headers, so the stream is opened with a short-lived, single-use
// ticket instead, which is harmless once it shows up in a log. See
// docs/protocol-http.md for the wire format.
//
// Concurrency: the goroutine serving GET events is the only writer of its
// response. It waits on the session's Wake channel, writes what Pull hands
// it, and writes keepalive comments; a session that replaces or ends the
// stream tells it through the non-blocking close function it attached with,
// and the stream goroutine writes the final close message itself. POST
// handlers never touch a stream: they hand messages to the hub, whose
// replies reach the stream through the session's outbox.
package sse
