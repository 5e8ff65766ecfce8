package room

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these; test
// them with errors.Is. Each maps to one wire error code (see Code).
var (
	// ErrBadRequest: a message that is not valid JSON, lacks a required
	// field, or has a field of the wrong type.
	ErrBadRequest = errors.New("bad request")
	// ErrUnknownType: a message whose "t" names no known message type.
	ErrUnknownType = errors.New("unknown message type")
	// ErrNotMember: an operation on a room the session has not joined.
	ErrNotMember = errors.New("not a member of the room")
	// ErrBadRoom: a room name that is empty, too long or not valid UTF-8.
	ErrBadRoom = errors.New("invalid room name")
	// ErrConflict: a patch whose base version is stale and which no longer
	// applies to the current document (or whose test operations fail).
	ErrConflict = errors.New("version conflict")
	// ErrBadPatch: a patch that is not a valid RFC 6902 document, or whose
	// operation cannot be applied (missing path, bad index, bad pointer).
	ErrBadPatch = errors.New("invalid patch")
	// ErrTestFailed: a patch whose "test" operation did not match.
	ErrTestFailed = errors.New("patch test operation failed")
	// ErrTooLarge: a message, patch or resulting document over a limit
	// (bytes, operations per patch, or JSON nesting depth).
	ErrTooLarge = errors.New("over a size limit")
	// ErrRateLimited: the session sent more than its rate limit allows.
	ErrRateLimited = errors.New("rate limited")
	// ErrSlowConsumer: a session's bounded outbound queue is full. The room
	// closes such a session with ReasonSlowConsumer.
	ErrSlowConsumer = errors.New("slow consumer")
	// ErrClosed: the session, room or hub is closed.
	ErrClosed = errors.New("closed")
	// ErrVersionConflict is returned by Broker.Append when another writer
	// committed a patch first; the room retries against the new state.
	ErrVersionConflict = errors.New("broker: version moved")
	// ErrDuplicate is returned by Broker.Append when the room already
	// committed an entry with the same client message id (a client's
	// retry, possibly through another node). Nothing changes; the broker
	// delivers (or has delivered) the original entry to this node before
	// Append returns, and the room answers the retry with the original ok.
	ErrDuplicate = errors.New("broker: client message id already committed")
	// ErrTruncated is returned by Broker.Since when the room log no longer
	// reaches back to the requested sequence number.
	ErrTruncated = errors.New("room log does not reach back that far")
)
