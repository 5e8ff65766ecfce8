// Package httpsession holds the HTTP endpoints that the SSE and long-polling
// transports share: origin and CORS checks, hello, authentication of a
// request by its session secret, send and close.
//
// An Endpoints is immutable after New and safe for concurrent use. Every
// method that takes a ResponseWriter either answers the request completely
// or, where it says so, leaves the answer to its caller.
package httpsession

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/origin"
	"github.com/roomwire/roomwire/transport/outbox"
)

// The request headers that carry a session's credentials. The secret never
// goes in a URL, where it would end up in access logs.
const (
	HeaderSession = "Roomwire-Session"
	HeaderToken   = "Roomwire-Token"
)

// Options configures Endpoints. Zero fields mean the defaults.
type Options struct {
	// Transport names the transport in sessions ("sse", "longpoll").
	Transport string
	// AllowedOrigins: see origin.New.
	AllowedOrigins []string
	// Authenticate, if set, runs on hello: an error refuses it with 401.
	Authenticate func(*http.Request) (user json.RawMessage, err error)
	// MaxMessageBytes is the largest client message. Default 64 KiB.
	MaxMessageBytes int64
	// MaxBodyBytes is the largest POST body (a batch). Default 1 MiB, and
	// at least MaxMessageBytes.
	MaxBodyBytes int64
}

// Endpoints serves the shared endpoints for the sessions of one registry.
type Endpoints struct {
	reg     *outbox.Registry
	opts    Options
	origins *origin.Checker
}

// New returns the shared endpoints for reg.
func New(reg *outbox.Registry, opts Options) *Endpoints {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 10
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	opts.MaxBodyBytes = max(opts.MaxBodyBytes, opts.MaxMessageBytes)
	return &Endpoints{reg: reg, opts: opts, origins: origin.New(opts.AllowedOrigins)}
}

// Registry returns the session registry.
func (e *Endpoints) Registry() *outbox.Registry { return e.reg }

// Guard refuses a request from a foreign origin (403) and answers a CORS
// preflight; for an allowed cross-origin request it sets the CORS response
// headers. It returns false when it has answered r.
func (e *Endpoints) Guard(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	h.Add("Vary", "Origin")
	if !e.origins.Allow(r) {
		WriteError(w, http.StatusForbidden, "forbidden_origin", "origin not allowed")
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		h.Set("Access-Control-Allow-Origin", o)
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, "+HeaderSession+", "+HeaderToken)
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// Error is the body of a refused request: the shape of an in-band error
// message, so that clients parse both alike.
type Error struct {
	Type string `json:"t"`
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

// WriteError answers with status and an Error body.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(Error{Type: room.TypeError, Code: code, Msg: msg})
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// WriteJSON answers 200 with a JSON body.
func WriteJSON(w http.ResponseWriter, body []byte) { writeJSON(w, http.StatusOK, body) }

// CloseMessage is the final message of a stream or poll whose session or
// connection ended: {"t":"close","code":...,"reason":...,"reconnect":...}.
func CloseMessage(reason room.CloseReason) []byte {
	b, _ := json.Marshal(struct {
		Type string `json:"t"`
		room.CloseReason
	}{room.TypeClose, reason})
	return b
}

// ReadBody reads r's body, at most limit bytes. Over the limit it answers
// 413 and returns false.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		WriteError(w, http.StatusRequestEntityTooLarge, room.CodeTooLarge, fmt.Sprintf("request body over %d bytes", limit))
		return nil, false
	case err != nil:
		WriteError(w, http.StatusBadRequest, room.CodeBadRequest, "reading the request body: "+err.Error())
		return nil, false
	}
	return b, true
}

// Hello reads a hello envelope from r's body and opens or resumes a
// session (see outbox.Registry.Hello), then starts its resume window: a
// session whose client never connects a stream or poll is reaped like one
// whose client went away. On failure Hello answers r (400, 401, 413, 503)
// and returns false; on success the caller answers.
func (e *Endpoints) Hello(w http.ResponseWriter, r *http.Request) (outbox.Welcome, bool) {
	var user json.RawMessage
	if e.opts.Authenticate != nil {
		var err error
		if user, err = e.opts.Authenticate(r); err != nil {
			WriteError(w, http.StatusUnauthorized, "unauthorized", "unauthorized")
			return outbox.Welcome{}, false
		}
	}
	body, ok := ReadBody(w, r, e.opts.MaxMessageBytes)
	if !ok {
		return outbox.Welcome{}, false
	}
	env, err := room.ParseEnvelope(body)
	if err != nil {
		WriteError(w, http.StatusBadRequest, room.CodeBadRequest, err.Error())
		return outbox.Welcome{}, false
	}
	// Attached while the hello runs (a resumed session's previous
	// connection, whose client has moved on, ends with ReasonReplaced),
	// then detached at once: the resume window runs until a stream or
	// poll attaches.
	wel, err := e.reg.HelloAttach(env, e.opts.Transport, user, func(room.CloseReason) {})
	switch {
	case errors.Is(err, room.ErrClosed):
		WriteError(w, http.StatusServiceUnavailable, "unavailable", "server shutting down")
		return outbox.Welcome{}, false
	case err != nil:
		status := http.StatusBadRequest
		if errors.Is(err, room.ErrTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		WriteError(w, status, room.Code(err), err.Error())
		return outbox.Welcome{}, false
	}
	wel.Session.Detach(wel.Gen)
	return wel, true
}

// Session returns the live session that r's credential headers name. When
// that session has ended recently, it returns nil and the reason, so that
// the caller can tell the client. Otherwise (no, wrong or unknown
// credentials, or a session long gone) it answers 401 and returns false.
func (e *Endpoints) Session(w http.ResponseWriter, r *http.Request) (*outbox.Session, room.CloseReason, bool) {
	sid, token := r.Header.Get(HeaderSession), r.Header.Get(HeaderToken)
	if sid == "" || token == "" {
		WriteError(w, http.StatusUnauthorized, "unauthorized", "missing "+HeaderSession+" or "+HeaderToken+" header")
		return nil, room.CloseReason{}, false
	}
	if s := e.reg.Lookup(sid, token); s != nil {
		return s, room.CloseReason{}, true
	}
	if reason, ok := e.reg.Ended(sid, token); ok {
		return nil, reason, true
	}
	WriteError(w, http.StatusUnauthorized, "unauthorized", "unknown session or wrong token")
	return nil, room.CloseReason{}, false
}

// WriteGone answers a request for a session that has ended: 410 with the
// close message as the body.
func WriteGone(w http.ResponseWriter, reason room.CloseReason) {
	writeJSON(w, http.StatusGone, CloseMessage(reason))
}

// Send serves POST send: the body is one client message or several
// separated by newlines, each handled as if it had arrived on a WebSocket
// (outbox.Session.Receive).
// A message that does not parse gets the in-band bad_request error; a body
// or message over its limit is refused whole with 413. It answers 204 once
// every message has been handled.
func (e *Endpoints) Send(w http.ResponseWriter, r *http.Request) {
	s, ended, ok := e.Session(w, r)
	if !ok {
		return
	}
	if s == nil {
		WriteGone(w, ended)
		return
	}
	body, ok := ReadBody(w, r, e.opts.MaxBodyBytes)
	if !ok {
		return
	}
	for line := range bytes.SplitSeq(body, []byte{'\n'}) {
		if int64(len(line)) > e.opts.MaxMessageBytes {
			WriteError(w, http.StatusRequestEntityTooLarge, room.CodeTooLarge, fmt.Sprintf("a message over %d bytes", e.opts.MaxMessageBytes))
			return
		}
	}
	// The messages are the session's, not the request's: a client or
	// proxy that drops the request midway must not fail the rest of them.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), sendTimeout)
	defer cancel()
	s.Receive(ctx, body)
	w.WriteHeader(http.StatusNoContent)
}

// sendTimeout bounds how long one POST's messages may take to carry out.
const sendTimeout = 30 * time.Second

// Close serves POST close, the same as a bye message: the session ends now
// (room.ReasonBye) and leaves its rooms; its stream or poll, if any,
// carries the close message. 204.
func (e *Endpoints) Close(w http.ResponseWriter, r *http.Request) {
	s, _, ok := e.Session(w, r)
	if !ok {
		return
	}
	if s != nil {
		s.Close(room.ReasonBye)
	}
	w.WriteHeader(http.StatusNoContent)
}

// ParseAck decodes an optional {"ack":N} body (empty means no ack).
func ParseAck(body []byte) (uint64, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return 0, nil
	}
	var v struct {
		Ack uint64 `json:"ack"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return 0, fmt.Errorf("%w: the body must be {\"ack\":N}: %v", room.ErrBadRequest, err)
	}
	return v.Ack, nil
}
