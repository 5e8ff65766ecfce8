package longpoll

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path"
	"time"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/internal/conns"
	"github.com/roomwire/roomwire/transport/internal/httpsession"
	"github.com/roomwire/roomwire/transport/outbox"
)

// DefaultHold is how long a poll is held by default: under the 30 s that
// many proxies and load balancers allow an idle response.
const DefaultHold = 25 * time.Second

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
	// Hold is the longest a poll waits for something to return; then it
	// returns an empty batch. Default DefaultHold (25 s).
	Hold time.Duration
	// WriteTimeout bounds writing a poll's answer. Default 10 s.
	WriteTimeout time.Duration
	// MaxBatchBytes is the size at which a poll stops adding messages to
	// its answer (a single larger message is still sent). Default 64 KiB.
	MaxBatchBytes int
	// Logger receives poll errors. Default: discard.
	Logger *slog.Logger
}

// Handler serves roomwire over long-polling. Create it with NewHandler.
type Handler struct {
	ep    *httpsession.Endpoints
	opts  Options
	log   *slog.Logger
	polls *conns.Set[*poll]
	// testHookHeld, if set, runs when a poll has attached.
	testHookHeld func()
}

// NewHandler returns a long-polling handler for the sessions of reg.
func NewHandler(reg *outbox.Registry, opts *Options) *Handler {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Hold <= 0 {
		o.Hold = DefaultHold
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Handler{
		ep: httpsession.New(reg, httpsession.Options{
			Transport:       "longpoll",
			AllowedOrigins:  o.AllowedOrigins,
			Authenticate:    o.Authenticate,
			MaxMessageBytes: o.MaxMessageBytes,
			MaxBodyBytes:    o.MaxBodyBytes,
		}),
		opts:  o,
		log:   o.Logger,
		polls: conns.New((*poll).End),
	}
}

// ServeHTTP routes on the last element of the request path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var serve func(http.ResponseWriter, *http.Request)
	switch path.Base(r.URL.Path) {
	case "hello":
		serve = h.hello
	case "poll":
		serve = h.poll
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
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpsession.WriteError(w, http.StatusMethodNotAllowed, room.CodeBadRequest, "method not allowed")
		return
	}
	serve(w, r)
}

// Shutdown answers every poll still held with a close message
// (room.ReasonShutdown), refuses new polls, and waits for the poll
// goroutines, or for ctx.
func (h *Handler) Shutdown(ctx context.Context) error {
	return h.polls.Shutdown(ctx, room.ReasonShutdown)
}

func (h *Handler) hello(w http.ResponseWriter, r *http.Request) {
	if wel, ok := h.ep.Hello(w, r); ok {
		httpsession.WriteJSON(w, wel.Body)
	}
}

// poll is one held poll request.
type poll struct {
	*conns.Quit
}

// poll acknowledges what the client has seen, then answers with the
// messages after it, waiting up to Hold for there to be any. This goroutine
// is the only writer of w.
func (h *Handler) poll(w http.ResponseWriter, r *http.Request) {
	sess, ended, ok := h.ep.Session(w, r)
	if !ok {
		return
	}
	if sess == nil {
		h.answer(w, nil, httpsession.CloseMessage(ended))
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
	after := min(ack, sess.Last())
	sess.Ack(after)

	p := &poll{Quit: conns.NewQuit()}
	gen, ok := sess.Attach("longpoll", p.End)
	if !ok {
		h.answer(w, nil, httpsession.CloseMessage(sess.Reason()))
		return
	}
	defer sess.Detach(gen)
	if !h.polls.Add(p) {
		h.answer(w, nil, httpsession.CloseMessage(room.ReasonShutdown))
		return
	}
	defer h.polls.Remove(p)
	if h.testHookHeld != nil {
		h.testHookHeld()
	}
	// Pull once before waiting: the wake that Attach signals may have gone
	// to the poll this one replaced.
	items := sess.Pull(nil, after, h.opts.MaxBatchBytes)
	if len(items) > 0 {
		h.answer(w, items, nil)
		return
	}
	hold := time.NewTimer(h.opts.Hold)
	defer hold.Stop()
	for {
		select {
		case <-p.Ended():
			h.answer(w, nil, httpsession.CloseMessage(p.Reason()))
			return
		case <-r.Context().Done(): // the client went away
			return
		case <-hold.C:
			h.answer(w, nil, nil)
			return
		case <-sess.Wake():
			if items = sess.Pull(items[:0], after, h.opts.MaxBatchBytes); len(items) > 0 {
				h.answer(w, items, nil)
				return
			}
		}
	}
}

// answer writes the JSON array of items, then last if non-nil.
func (h *Handler) answer(w http.ResponseWriter, items []outbox.Item, last []byte) {
	n := 2 + len(last)
	for _, it := range items {
		n += len(it.Body) + 24
	}
	buf := make([]byte, 0, n)
	buf = append(buf, '[')
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = it.AppendTo(buf)
	}
	if last != nil {
		if len(items) > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, last...)
	}
	buf = append(buf, ']')
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return
	}
	httpsession.WriteJSON(w, buf)
}
