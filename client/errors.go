package client

import (
	"errors"
	"fmt"

	"github.com/roomwire/roomwire/room"
)

// Sentinel errors. Test them with errors.Is.
var (
	// ErrClosed: the client, or the room, has been closed (Client.Close,
	// Room.Leave, or a terminal close from the server).
	ErrClosed = errors.New("client: closed")
	// ErrOutboxFull: Options.MaxPending messages already await the
	// server's verdict; the new one was not queued.
	ErrOutboxFull = errors.New("client: outbox full")
	// ErrReplaced: another connection took over this client's session
	// (close code 4004). The client stops; it does not reconnect.
	ErrReplaced = errors.New("client: session replaced by another connection")
	// ErrUnauthorized: the server refused the connection (HTTP 401 or
	// 403, or close code 4101). The client stops.
	ErrUnauthorized = errors.New("client: unauthorized")
	// ErrNoTransport: Options.Transports names no transport this client
	// implements.
	ErrNoTransport = errors.New("client: no usable transport")
)

// CloseError is a close code and reason sent by the server (on WebSocket,
// the close frame's). Codes 4000-4099 tell the client to reconnect and
// resume; 4100-4199 are terminal; 4004 means another connection took the
// session over. 1006 stands for a connection that broke without a close
// frame.
type CloseError struct {
	Code int
	Text string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: connection closed: %d %s", e.Code, e.Text)
}

// Terminal reports whether the code forbids reconnecting.
func (e *CloseError) Terminal() bool {
	return e.Code == room.ReasonReplaced.Code || (e.Code >= 4100 && e.Code <= 4199)
}

// Is makes errors.Is(err, ErrReplaced) and errors.Is(err, ErrUnauthorized)
// true for the matching codes.
func (e *CloseError) Is(target error) bool {
	switch target {
	case ErrReplaced:
		return e.Code == room.ReasonReplaced.Code
	case ErrUnauthorized:
		return e.Code == room.ReasonUnauthorized.Code
	}
	return false
}

// ServerError is an error reply from the server to one of this client's
// messages (a rejected patch, a refused join). errors.Is matches it against
// the room package's sentinels by wire code, so
// errors.Is(err, room.ErrConflict) is true for a "conflict".
type ServerError struct {
	Room string
	CID  string // the client message id of the refused message
	Code string // wire code, e.g. room.CodeConflict
	Msg  string
	// Version is the room's document version, when the server said (it
	// does for conflicts).
	Version *uint64
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("client: server refused %s in room %q: %s (%s)", e.CID, e.Room, e.Msg, e.Code)
}

// Is reports whether target is the room sentinel for e.Code.
func (e *ServerError) Is(target error) bool {
	c := room.Code(target)
	return c != room.CodeInternal && c == e.Code
}

// httpError is a failed handshake.
type httpError struct {
	Status int
	err    error
}

func (e *httpError) Error() string {
	return fmt.Sprintf("client: handshake refused: HTTP %d: %v", e.Status, e.err)
}
func (e *httpError) Unwrap() error { return e.err }
func (e *httpError) Is(target error) bool {
	return target == ErrUnauthorized && (e.Status == 401 || e.Status == 403)
}
