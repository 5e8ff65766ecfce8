package room

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Message types a client sends. Session-level types (hello, ack) are
// handled by the transport layer; the others by Hub.Handle.
const (
	TypeHello = "hello" // first message on a connection: new session or resume
	TypeAck   = "ack"   // acknowledges every durable message up to sseq "ack"
	TypeBye   = "bye"   // ends the session now: its rooms see it leave at once
	TypeJoin  = "join"  // join a room, optionally replaying from "since"
	TypeLeave = "leave" // leave a room
	TypePatch = "patch" // RFC 6902 patch against document version "base"
	TypePub   = "pub"   // publish a durable event
	TypeEph   = "eph"   // ephemeral value (cursor, typing) under "key"
	TypePing  = "ping"  // application-level heartbeat; answered by pong
	// TypeSignal carries WebRTC negotiation (SDP, ICE candidates) to one
	// member "to" of a room both sessions are in; the server sends it on
	// with "from". Durable in the session, never in the room log.
	TypeSignal = "signal"
	// TypeRelay carries application data to one member "to" of a shared
	// room, for peers whose direct channel is not open. With "key" it is
	// ephemeral (latest value per key wins), without it durable.
	TypeRelay = "relay"
)

// Message types the server sends.
const (
	TypeWelcome  = "welcome"  // reply to hello
	TypeJoined   = "joined"   // reply to join: snapshot, replay or resync
	TypeOK       = "ok"       // success reply to the sender (with seq and v for durable ops)
	TypeError    = "error"    // failure reply; "code" says which
	TypeEvent    = "event"    // another member's published event
	TypePresence = "presence" // member joined or left
	TypePong     = "pong"     // reply to ping
	TypeClose    = "close"    // the server is closing the connection
	// TypePatch and TypeEph are also sent by the server, for other members'
	// patches and ephemeral values.
)

// Join modes, in the "mode" field of a joined message.
const (
	ModeSnapshot = "snapshot" // a fresh join: "data" is the document at "seq"
	ModeReplay   = "replay"   // rejoin: the entries after "seq" follow, in order
	ModeResync   = "resync"   // rejoin that the log cannot serve: "data" replaces the document
)

// Envelope is a decoded client message. Which fields matter depends on Type.
type Envelope struct {
	Type string `json:"t"`
	Room string `json:"room,omitempty"`
	// CID is the client message id: a retried message with the same CID
	// in the same room is applied once.
	CID string `json:"cid,omitempty"`
	// Base is the document version a patch was made against.
	Base *uint64 `json:"base,omitempty"`
	// Since is the last room seq the client has seen, on a rejoin.
	Since *uint64 `json:"since,omitempty"`
	// Ack is the highest session seq the client has received (type ack,
	// and hello's resume).
	Ack    uint64          `json:"ack,omitempty"`
	Ops    json.RawMessage `json:"ops,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Key    string          `json:"key,omitempty"`
	To     string          `json:"to,omitempty"` // target session id (signal, relay)
	User   json.RawMessage `json:"user,omitempty"`
	Resume *Resume         `json:"resume,omitempty"`
}

// Resume is hello's request to continue an earlier session.
type Resume struct {
	SID   string `json:"sid"`
	Token string `json:"token"`
	Ack   uint64 `json:"ack"`
}

// ParseEnvelope decodes one client message. It rejects anything but a single
// JSON object with a string "t", and errors wrap ErrBadRequest.
func ParseEnvelope(raw []byte) (*Envelope, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("%w: a message must be a JSON object", ErrBadRequest)
	}
	var e Envelope
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	if e.Type == "" {
		return nil, fmt.Errorf("%w: missing \"t\"", ErrBadRequest)
	}
	return &e, nil
}

// Error codes, in the "code" field of an error message.
const (
	CodeBadRequest  = "bad_request"
	CodeUnknownType = "unknown_type"
	CodeNotMember   = "not_member"
	CodeBadRoom     = "bad_room"
	CodeConflict    = "conflict"
	CodeBadPatch    = "bad_patch"
	CodeTestFailed  = "test_failed"
	CodeTooLarge    = "too_large"
	CodeRateLimited = "rate_limited"
	CodeInternal    = "internal"
)

var codeOf = []struct {
	err  error
	code string
}{
	{ErrBadRequest, CodeBadRequest},
	{ErrUnknownType, CodeUnknownType},
	{ErrNotMember, CodeNotMember},
	{ErrBadRoom, CodeBadRoom},
	{ErrConflict, CodeConflict},
	{ErrTestFailed, CodeTestFailed},
	{ErrBadPatch, CodeBadPatch},
	{ErrTooLarge, CodeTooLarge},
	{ErrRateLimited, CodeRateLimited},
}

// Code returns the wire error code for err.
func Code(err error) string {
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// outMsg is the shape of every server message. Fields are emitted in this
// order; pointer fields are omitted when nil so that zero values (version 0,
// seq 0) can still be sent where they mean something.
type outMsg struct {
	Type    string          `json:"t"`
	Room    string          `json:"room,omitempty"`
	CID     string          `json:"cid,omitempty"`
	Mode    string          `json:"mode,omitempty"`
	Seq     *uint64         `json:"seq,omitempty"`
	Ver     *uint64         `json:"v,omitempty"`
	From    string          `json:"from,omitempty"`
	Key     string          `json:"key,omitempty"`
	Event   string          `json:"event,omitempty"`
	Code    string          `json:"code,omitempty"`
	Msg     string          `json:"msg,omitempty"`
	Ops     json.RawMessage `json:"ops,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Member  *Member         `json:"member,omitempty"`
	Members []Member        `json:"members,omitempty"`
}

func u64(v uint64) *uint64 { return &v }

// encode returns m's wire form. It does not escape '<', '>' and '&' as
// json.Marshal would: the ops and documents it carries must reach clients
// byte for byte as the room holds them, or clients could not converge on
// the server's exact bytes.
func encode(m *outMsg) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		// Only json.RawMessage fields can fail, and every one of them
		// was validated JSON when it entered the hub.
		panic("room: encoding a server message: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'})
}

func durable(m *outMsg) *Message { return &Message{Body: encode(m), Durable: true} }

// errorMessage builds the error reply for err. v, when non-nil, is the
// room's current document version (sent with conflicts).
func errorMessage(room, cid string, err error, v *uint64) *Message {
	return durable(&outMsg{Type: TypeError, Room: room, CID: cid, Code: Code(err), Msg: err.Error(), Ver: v})
}

// ErrorMessage builds the error reply for err, for transports that reject a
// message before it reaches the hub (for example one that does not parse).
func ErrorMessage(cid string, err error) *Message { return errorMessage("", cid, err, nil) }

// AppendFrame appends the wire form of a durable message body numbered sseq:
// the body with "sseq" as its first field. The body is not re-encoded.
func AppendFrame(dst []byte, sseq uint64, body []byte) []byte {
	dst = append(dst, `{"sseq":`...)
	dst = strconv.AppendUint(dst, sseq, 10)
	if len(body) > 2 {
		dst = append(dst, ',')
	}
	return append(dst, body[1:]...)
}
