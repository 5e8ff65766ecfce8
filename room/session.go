package room

import (
	"encoding/json"
	"fmt"
)

// Session is one connected client as the room core sees it, whatever the
// transport. A session may join many rooms.
//
// Implementations must make Send non-blocking: it enqueues m on a bounded
// queue and returns ErrSlowConsumer when the queue is full (the hub then
// closes the session with ReasonSlowConsumer, outside any room lock), or
// ErrClosed after Close. Send, Close, Done, ID and Transport may be called
// from any goroutine, including while the hub holds a room lock, so they must
// never call back into the Hub.
type Session interface {
	// ID is the session id, unique within the hub and stable across resume.
	ID() string
	// Transport names the transport currently carrying the session
	// ("ws", "sse", "longpoll", "rtcdc", "pipe").
	Transport() string
	// Send enqueues m without blocking.
	Send(m *Message) error
	// Close ends the session with reason. It is idempotent.
	Close(reason CloseReason)
	// Done is closed once the session has ended.
	Done() <-chan struct{}
}

// Message is one outbound message, encoded once and shared by every
// recipient: treat it, and Body, as immutable.
type Message struct {
	// Body is one JSON object without the "sseq" field; the session adds
	// its own session sequence number when it writes a durable message.
	Body []byte
	// Durable messages are delivered in session order, numbered by the
	// session (sseq) and kept until acknowledged. Other messages are
	// ephemeral: latest value per Key wins, never queued behind durable
	// ones, dropped first.
	Durable bool
	// Key identifies an ephemeral value (room, sender and key); a newer
	// ephemeral message with the same Key replaces an unsent older one.
	Key string
}

// Size is the number of bytes m occupies in a session's queue.
func (m *Message) Size() int { return len(m.Body) + len(m.Key) }

// CloseReason says why a session or connection ended. Codes 4000-4099 tell
// the client to reconnect (and resume); codes 4100-4199 are terminal: the
// client must not reconnect without changing something. On WebSocket the
// code and text are the close frame's.
type CloseReason struct {
	Code      int    `json:"code"`
	Text      string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

func (r CloseReason) Error() string { return fmt.Sprintf("closed %d: %s", r.Code, r.Text) }

// The close reasons. See docs/PROTOCOL.md, "Close codes".
var (
	ReasonShutdown     = CloseReason{4000, "server shutting down", true}
	ReasonSlowConsumer = CloseReason{4001, "slow consumer", true}
	ReasonHeartbeat    = CloseReason{4002, "heartbeat timeout", true}
	ReasonExpired      = CloseReason{4003, "session expired", true}
	ReasonReplaced     = CloseReason{4004, "connection replaced by a newer one", false}
	ReasonBye          = CloseReason{1000, "session ended by the client", false}
	ReasonProtocol     = CloseReason{4100, "protocol violation", false}
	ReasonUnauthorized = CloseReason{4101, "unauthorized", false}
)

// Member is a session as the other members of a room see it.
type Member struct {
	SID       string          `json:"sid"`
	User      json.RawMessage `json:"user,omitempty"`
	Transport string          `json:"transport"`
}
