package client

import (
	"context"
	"fmt"
	"net/url"
)

// Transport names, for Options.Transports.
const (
	TransportWS       = "ws"       // WebSocket
	TransportSSE      = "sse"      // Server-Sent Events for reads, POST for writes (not yet in this client)
	TransportLongPoll = "longpoll" // long-polling (not yet in this client)
)

// defaultTransports is the order tried when Options.Transports is nil:
// only the transports this client implements, best first.
var defaultTransports = []string{TransportWS}

// transport opens connections of one kind. Each implementation lives in
// its own file (ws.go); SSE+POST, long-polling and DataChannels plug in
// here.
type transport interface {
	name() string
	// dial connects to the server and performs the handshake: it sends
	// hello (one JSON object) the way the transport carries it and
	// returns the connection with the server's first frame, which begins
	// with the welcome message (more messages may follow it, separated
	// by '\n').
	dial(ctx context.Context, hello []byte) (conn, []byte, error)
}

// conn is one connection. recv is called by one goroutine (the client's
// reader) and send by one other (the connection's writer); close may be
// called from any goroutine, at any time, and more than once: it makes
// pending and later calls of recv and send fail.
type conn interface {
	// send writes one frame: one or more client messages separated by
	// '\n'.
	send(frame []byte) error
	// recv returns the next frame: one or more server messages separated
	// by '\n'. When the server closed the connection the error wraps a
	// *CloseError; a connection that broke otherwise reports code 1006.
	recv() ([]byte, error)
	// close ends the connection, politely (a normal close) or abruptly.
	close(graceful bool)
}

// newTransport returns the transport called name for the server at base.
func newTransport(name string, base *url.URL, o *Options) (transport, error) {
	switch name {
	case TransportWS:
		return newWS(base, o), nil
	case TransportSSE, TransportLongPoll:
		return nil, fmt.Errorf("%w: %q is not implemented yet", ErrNoTransport, name)
	}
	return nil, fmt.Errorf("%w: unknown transport %q", ErrNoTransport, name)
}
