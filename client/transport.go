package client

import (
	"context"
	"fmt"
	"net/url"
	"time"
)

// Transport names, for Options.Transports.
const (
	TransportWS       = "ws"       // WebSocket
	TransportSSE      = "sse"      // Server-Sent Events for reads, POST for writes
	TransportLongPoll = "longpoll" // long-polling, POST for writes
)

// defaultTransports is the order tried when Options.Transports is nil:
// best first.
var defaultTransports = []string{TransportWS, TransportSSE, TransportLongPoll}

// transport opens connections of one kind. Each implementation lives in
// its own file (ws.go, sse.go, longpoll.go); DataChannels plug in here.
type transport interface {
	name() string
	// dial connects to the server and performs the handshake: it sends
	// hello (one JSON object) the way the transport carries it and
	// returns the connection with the server's first frame, which begins
	// with the welcome message (more messages may follow it, separated
	// by '\n'). An error that happened after the server had welcomed the
	// client (a session now exists) is a *sessionError.
	dial(ctx context.Context, hello []byte) (conn, []byte, error)
	// probe checks, without touching the client's session, whether a
	// connection of this kind would work now (for upgrades).
	probe(ctx context.Context) error
}

// conn is one connection. recv is called by one goroutine (the client's
// reader) and send by one other (the connection's writer); close may be
// called from any goroutine, at any time, and more than once: it makes
// pending and later calls of recv and send fail.
//
// The reader handles each frame recv returns before it calls recv again, so
// a transport whose requests carry acknowledgements (long-polling) may
// acknowledge every durable message of the frames it has returned.
type conn interface {
	// send writes one frame: one or more client messages separated by
	// '\n'. An ack, when present, is the first of them.
	send(frame []byte) error
	// recv returns the next frame: one or more server messages separated
	// by '\n'. When the server closed the connection the error wraps a
	// *CloseError; a connection that broke otherwise reports code 1006.
	recv() ([]byte, error)
	// close ends the connection, politely (a normal close) or abruptly.
	close(graceful bool)
}

// lazyAcker is implemented by connections on which every ack costs a
// request of its own (SSE): the writer then sends an ack alone only when
// ackBatch messages await one or ackDelay has passed, and otherwise lets
// it ride on the next frame.
type lazyAcker interface{ lazyAcks() }

// Ack batching for lazyAcker connections: docs/protocol-http.md asks for
// an ack at least every 100 ms while something is unacknowledged, or every
// 64 messages.
const (
	ackBatch = 64
	ackDelay = 50 * time.Millisecond
)

// pauser is implemented by connections that attach the session anew
// from time to time (a long-poll's every poll), which would take it back
// from the connection an upgrade is opening: pause stops that and returns
// once no such request is under way (or ctx ends); resume undoes it, when
// the upgrade did not happen.
type pauser interface {
	pause(ctx context.Context)
	resume()
}

// idleCloser is implemented by transports that keep idle connections
// (HTTP keep-alive); the client calls it once it has stopped.
type idleCloser interface{ closeIdle() }

// newTransport returns the transport called name for the server at base.
// hc is shared by the HTTP transports.
func newTransport(name string, base *url.URL, o *Options, hc *httpClient) (transport, error) {
	switch name {
	case TransportWS:
		return newWS(base, o), nil
	case TransportSSE:
		return newSSE(hc, o), nil
	case TransportLongPoll:
		return newLongPoll(hc, o), nil
	}
	return nil, fmt.Errorf("%w: unknown transport %q", ErrNoTransport, name)
}
