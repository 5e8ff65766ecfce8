// Package longpoll carries roomwire sessions over HTTP long-polling, the
// transport that works through any proxy that passes plain requests.
//
// A Handler serves four endpoints, named by the last element of the request
// path wherever it is mounted (transport.Server mounts it under
// /longpoll/):
//
//	POST hello  hello envelope -> welcome
//	POST poll   (session headers) {"ack":N} -> JSON array of messages,
//	            held until there is something to return or Hold passes
//	POST send   (session headers) newline-separated client messages
//	POST close  (session headers) end the session
//
// See docs/protocol-http.md for the wire format.
//
// Concurrency: a session outlives its polls. Each poll attaches to the
// session for as long as it is held (a second poll replaces the first,
// which answers at once) and detaches when it answers, which starts the
// session's resume window: a session that no poll attaches to within the
// window ends, and the outbox's expiry timer reaps it; no goroutine of this
// package runs between polls. The goroutine serving a poll is the only
// writer of its response.
package longpoll
