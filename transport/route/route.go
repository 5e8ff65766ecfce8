// Package route lets the HTTP transports of several nodes serve one session
// wherever its requests land. A session lives on the node that opened it
// (its outbox, its room memberships); a request for it that arrives at
// another node is forwarded to that owner, which serves it exactly as if it
// had arrived there and streams the answer back.
//
// Router is the mechanism: a session directory (session id → owner node)
// and a request/answer channel between nodes. The transports only use this
// interface; redisroute implements it over Redis. A nil Router (the
// default) means every session is local, as on a single node.
package route

import (
	"context"
	"errors"
	"net/http"
)

// Request is an HTTP request forwarded to a session's owner: everything the
// owner's handlers read.
type Request struct {
	Method string      `json:"m"`
	Path   string      `json:"p"` // path and query, as received
	Host   string      `json:"h"`
	Header http.Header `json:"hd,omitempty"`
	Body   []byte      `json:"b,omitempty"`
}

// Frame is one piece of the owner's answer. The first frame of an answer
// carries Status and Header; every frame may carry Data, written and
// flushed in order.
type Frame struct {
	Status int         `json:"s,omitempty"`
	Header http.Header `json:"hd,omitempty"`
	Data   []byte      `json:"d,omitempty"`
}

// ErrUnreachable is returned by Forward when the owner cannot be reached
// (it is gone, or stopped answering).
var ErrUnreachable = errors.New("route: session owner unreachable")

// Handler serves a forwarded request on the owner: it writes the answer
// with send, in order, and returns when the answer is complete or ctx ends
// (the requesting client went away, or the router is closing). send fails
// when the requesting node no longer listens; the handler then stops.
type Handler func(ctx context.Context, req *Request, send func(Frame) error)

// Router is a session directory plus a request channel between nodes.
// Implementations are safe for concurrent use.
type Router interface {
	// Self is this node's id, as Owner reports it.
	Self() string
	// Opened records that this node owns session sid, before the session's
	// id reaches its client; the record lasts while the session lives.
	Opened(sid string)
	// Ended records that session sid, owned here, has ended. Its record
	// may linger (for the owner to tell late requests why it ended).
	Ended(sid string)
	// Owner returns the node that owns session sid, or "" if none is known.
	Owner(ctx context.Context, sid string) (string, error)
	// Forward sends req to node and passes the frames of its answer to
	// out, in order, returning when the answer is complete, when ctx ends
	// (the owner is told to stop), or with ErrUnreachable.
	Forward(ctx context.Context, node string, req *Request, out func(Frame) error) error
	// Serve installs the handler of requests forwarded to this node. Until
	// it is called, such requests are refused with 503.
	Serve(h Handler)
}
