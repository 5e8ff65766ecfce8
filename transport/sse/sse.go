package sse

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/internal/conns"
	"github.com/roomwire/roomwire/transport/internal/httpsession"
	"github.com/roomwire/roomwire/transport/outbox"
)

// Options configures a Handler. Zero fields mean the defaults.
type Options struct {
	// AllowedOrigins lists the cross-site origins allowed in (see
	// origin.New); they also get CORS headers. Default: none; same-origin
	// and non-browser clients only.
	AllowedOrigins []string
	// Authenticate, if set, runs on hello: its error refuses the hello
	// with 401; its result is the user info others see.
	Authenticate func(*http.Request) (user json.RawMessage, err error)
	// MaxMessageBytes is the largest client message. Default 64 KiB.
	MaxMessageBytes int64
	// MaxBodyBytes is the largest POST send body. Default 1 MiB.
	MaxBodyBytes int64
	// KeepAlive is the interval of the comment lines that keep an idle
	// stream open through proxies (and let the server notice a dead
	// client). Default 15 s.
	KeepAlive time.Duration
	// WriteTimeout bounds every write to a stream. Default 10 s.
	WriteTimeout time.Duration
	// TicketTTL is how long a stream ticket stays valid. Default 20 s.
	TicketTTL time.Duration
	// MaxBatchBytes is the size at which the stream stops adding events
	// to one write (a single larger message is still written). Default
	// 64 KiB.
	MaxBatchBytes int
	// Padding is the size of the comment written when a stream opens, for
	// proxies that hold back the first kilobytes of a response. Default
	// 2048 bytes; negative means none.
	Padding int
	// TicketPrefix starts every ticket this handler issues (tickets stay
	// opaque to clients). In a cluster it names the issuing node followed
	// by a dot, so that a stream request landing on another node can be
	// routed to the session's owner (see transport/route). Default: none.
	TicketPrefix string
	// Logger receives stream errors. Default: discard.
	Logger *slog.Logger
}

// Handler serves roomwire over SSE and POST. Create it with NewHandler.
type Handler struct {
	ep      *httpsession.Endpoints
	opts    Options
	log     *slog.Logger
	tickets tickets
	padding []byte
	streams *conns.Set[*stream]
}

// NewHandler returns an SSE handler for the sessions of reg.
func NewHandler(reg *outbox.Registry, opts *Options) *Handler {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.TicketTTL <= 0 {
		o.TicketTTL = 20 * time.Second
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 64 << 10
	}
	if o.Padding == 0 {
		o.Padding = 2048
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &Handler{
		ep: httpsession.New(reg, httpsession.Options{
			Transport:       "sse",
			AllowedOrigins:  o.AllowedOrigins,
			Authenticate:    o.Authenticate,
			MaxMessageBytes: o.MaxMessageBytes,
			MaxBodyBytes:    o.MaxBodyBytes,
		}),
		opts:    o,
		log:     o.Logger,
		tickets: tickets{prefix: o.TicketPrefix, ttl: o.TicketTTL, m: map[string]ticket{}, bySID: map[string]string{}},
		streams: conns.New((*stream).End),
	}
	// The opening comment: ":" then spaces, so that a proxy that holds
	// back the first kilobytes passes the stream on at once.
	h.padding = append([]byte(":"), bytes.Repeat([]byte(" "), max(o.Padding, 0))...)
	h.padding = append(h.padding, '\n', '\n')
	return h
}

// ServeHTTP routes on the last element of the request path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	method := http.MethodPost
	var serve func(http.ResponseWriter, *http.Request)
	switch path.Base(r.URL.Path) {
	case "events":
		method, serve = http.MethodGet, h.events
	case "hello":
		serve = h.hello
	case "ticket":
		serve = h.ticket
	case "send":
		serve = h.ep.Send
	case "close":
		serve = h.ep.Close
	default:
		http.NotFound(w, r)
		return
	}
	if !h.ep.Guard(w, r) {
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		httpsession.WriteError(w, http.StatusMethodNotAllowed, room.CodeBadRequest, "method not allowed")
		return
	}
	serve(w, r)
}

// Shutdown ends every stream still open with room.ReasonShutdown (sessions
// closed by the hub have already ended theirs), refuses new ones, and waits
// for the stream goroutines, or for ctx.
func (h *Handler) Shutdown(ctx context.Context) error {
	return h.streams.Shutdown(ctx, room.ReasonShutdown)
}

// hello opens or resumes a session; the reply is the welcome message with
// one more field, "ticket", for the first stream.
func (h *Handler) hello(w http.ResponseWriter, r *http.Request) {
	wel, ok := h.ep.Hello(w, r)
	if !ok {
		return
	}
	t := h.tickets.issue(wel.Session, wel.Ack)
	body := append(wel.Body[:len(wel.Body)-1:len(wel.Body)-1], `,"ticket":`...)
	body = strconv.AppendQuote(body, t)
	body = append(body, '}')
	httpsession.WriteJSON(w, body)
}

// ticket issues a fresh ticket for a session's next stream. The optional
// body {"ack":N} acknowledges every message up to N, and the stream opened
// with the ticket starts after N.
func (h *Handler) ticket(w http.ResponseWriter, r *http.Request) {
	s, ended, ok := h.ep.Session(w, r)
	if !ok {
		return
	}
	if s == nil {
		httpsession.WriteGone(w, ended)
		return
	}
	body, ok := httpsession.ReadBody(w, r, 4096)
	if !ok {
		return
	}
	ack, err := httpsession.ParseAck(body)
	if err != nil {
		httpsession.WriteError(w, http.StatusBadRequest, room.CodeBadRequest, err.Error())
		return
	}
	ack = min(ack, s.Last())
	s.Ack(ack)
	t := h.tickets.issue(s, ack)
	b, _ := json.Marshal(struct {
		Ticket string `json:"ticket"`
	}{t})
	httpsession.WriteJSON(w, b)
}

// stream is one open GET events response.
type stream struct {
	*conns.Quit
}

// events serves the event stream. This goroutine is the only writer of w.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	t, ok := h.tickets.redeem(r.URL.Query().Get("ticket"))
	if !ok {
		httpsession.WriteError(w, http.StatusUnauthorized, "unauthorized", "unknown, used or expired ticket")
		return
	}
	sess, after := t.sess, t.after
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			httpsession.WriteError(w, http.StatusBadRequest, room.CodeBadRequest, "Last-Event-ID is not a session seq")
			return
		}
		after = min(n, sess.Last())
		sess.Ack(after)
	}

	st := &stream{Quit: conns.NewQuit()}
	if !h.streams.Add(st) {
		httpsession.WriteError(w, http.StatusServiceUnavailable, "unavailable", "server shutting down")
		return
	}
	defer h.streams.Remove(st)

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	// no-transform: proxies must not compress (and so buffer) the stream.
	hdr.Set("Cache-Control", "no-cache, no-store, no-transform")
	hdr.Set("X-Accel-Buffering", "no") // nginx: pass it on unbuffered
	hdr.Del("Content-Length")
	rc := http.NewResponseController(w)

	gen, ok := sess.Attach("sse", st.End)
	if !ok {
		st.End(sess.Reason())
	} else {
		defer sess.Detach(gen)
	}
	w.WriteHeader(http.StatusOK)
	h.write(r.Context(), rc, w, sess, st, after)
}

// write runs the stream until the session ends or replaces it, the client
// goes away, or a write fails.
func (h *Handler) write(ctx context.Context, rc *http.ResponseController, w http.ResponseWriter, sess *outbox.Session, st *stream, after uint64) {
	opts := h.opts
	put := func(b []byte) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		if err := rc.Flush(); err != nil {
			h.log.Debug("sse flush", "sid", sess.ID(), "err", err)
			return false
		}
		return true
	}
	var (
		items []outbox.Item
		buf   []byte
	)
	// drain writes what the session has for the stream; false means the
	// stream is broken.
	drain := func() bool {
		items = sess.Pull(items[:0], after, opts.MaxBatchBytes)
		if len(items) == 0 {
			return true
		}
		buf = buf[:0]
		for _, it := range items {
			buf = appendEvent(buf, it)
			if it.Seq > 0 {
				after = it.Seq
			}
		}
		ok := put(buf)
		if cap(buf) > 4*opts.MaxBatchBytes {
			buf = nil // do not keep a one-off huge buffer
		}
		return ok
	}
	// Pull once before waiting: the wake that Attach signals may have gone
	// to the stream this one replaced.
	if !put(h.padding) || !drain() {
		return
	}
	keepAlive := time.NewTimer(opts.KeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-st.Ended():
			put(appendEvent(buf[:0], outbox.Item{Body: httpsession.CloseMessage(st.Reason())}))
			return
		case <-ctx.Done(): // the client went away
			return
		case <-keepAlive.C:
			if !put([]byte(": keepalive\n\n")) {
				return
			}
		case <-sess.Wake():
			if !drain() {
				return
			}
		}
		keepAlive.Reset(opts.KeepAlive)
	}
}

// appendEvent appends one SSE event: "id:" with the session seq for a
// durable message, then the message as "data:".
func appendEvent(dst []byte, it outbox.Item) []byte {
	if it.Seq > 0 {
		dst = append(dst, "id: "...)
		dst = strconv.AppendUint(dst, it.Seq, 10)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	start := len(dst)
	dst = it.AppendTo(dst)
	// The hub's JSON is compact. Should a raw CR or LF ever appear, it
	// can only be whitespace between tokens (JSON escapes them inside
	// strings), and in SSE it would end the data line: make it a space.
	for i := start; i < len(dst); i++ {
		if dst[i] == '\n' || dst[i] == '\r' {
			dst[i] = ' '
		}
	}
	return append(dst, '\n', '\n')
}

// tickets are the single-use credentials for GET events. A session has at
// most one outstanding ticket: issuing a new one revokes the old.
type tickets struct {
	prefix string
	ttl    time.Duration

	mu        sync.Mutex
	m         map[string]ticket
	bySID     map[string]string
	lastSweep time.Time
}

type ticket struct {
	sess  *outbox.Session
	after uint64
	exp   time.Time
}

func (ts *tickets) issue(s *outbox.Session, after uint64) string {
	b := make([]byte, 24)
	rand.Read(b)
	id := ts.prefix + base64.RawURLEncoding.EncodeToString(b)
	now := time.Now()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if old, ok := ts.bySID[s.ID()]; ok {
		delete(ts.m, old)
	}
	ts.m[id] = ticket{sess: s, after: after, exp: now.Add(ts.ttl)}
	ts.bySID[s.ID()] = id
	ts.sweep(now)
	return id
}

// sweep drops expired tickets, at most once per TTL (so in amortised
// constant time). Called with mu held.
func (ts *tickets) sweep(now time.Time) {
	if now.Sub(ts.lastSweep) <= ts.ttl {
		return
	}
	ts.lastSweep = now
	for k, t := range ts.m {
		if now.After(t.exp) {
			ts.drop(k, t)
		}
	}
}

func (ts *tickets) redeem(id string) (ticket, bool) {
	if id == "" {
		return ticket{}, false
	}
	now := time.Now()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.sweep(now)
	t, ok := ts.m[id]
	if !ok {
		return ticket{}, false
	}
	ts.drop(id, t)
	if now.After(t.exp) {
		return ticket{}, false
	}
	return t, true
}

// drop forgets ticket id. Called with mu held.
func (ts *tickets) drop(id string, t ticket) {
	delete(ts.m, id)
	if ts.bySID[t.sess.ID()] == id {
		delete(ts.bySID, t.sess.ID())
	}
}
