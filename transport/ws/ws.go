package ws

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/internal/conns"
	"github.com/roomwire/roomwire/transport/origin"
	"github.com/roomwire/roomwire/transport/outbox"
)

// Options configures a Handler. Zero fields mean the defaults.
type Options struct {
	// AllowedOrigins lists the cross-site origins allowed to connect (see
	// origin.New). Default: none; same-origin and non-browser clients only.
	AllowedOrigins []string
	// Authenticate, if set, runs before the upgrade: its error refuses the
	// handshake with 401; its result is the user info others see.
	Authenticate func(*http.Request) (user json.RawMessage, err error)
	// MaxMessageBytes is the largest client message. A larger one closes
	// the connection with 1009 (message too big). Default 64 KiB.
	MaxMessageBytes int64
	// PongWait is how long the connection may be silent: the server pings
	// every PongWait*9/10, and a peer that answers nothing within PongWait
	// is dead. Default 30 s.
	PongWait time.Duration
	// WriteTimeout bounds every write. Default 10 s.
	WriteTimeout time.Duration
	// HelloTimeout bounds the wait for the client's hello. Default 10 s.
	HelloTimeout time.Duration
	// MaxFrameBytes is the size at which the writer stops adding messages
	// to one frame (a single larger message is still sent). Default 64 KiB.
	MaxFrameBytes int
	// Logger receives connection errors. Default: discard.
	Logger *slog.Logger
}

// Handler serves roomwire over WebSocket. Create it with NewHandler.
type Handler struct {
	reg      *outbox.Registry
	opts     Options
	origins  *origin.Checker
	upgrader websocket.Upgrader
	log      *slog.Logger
	conns    *conns.Set[*conn]
}

// NewHandler returns a WebSocket handler for the sessions of reg.
func NewHandler(reg *outbox.Registry, opts *Options) *Handler {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 64 << 10
	}
	if o.PongWait <= 0 {
		o.PongWait = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = 10 * time.Second
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &Handler{reg: reg, opts: o, origins: origin.New(o.AllowedOrigins), log: o.Logger, conns: conns.New((*conn).End)}
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: o.HelloTimeout,
		// Own buffers instead of net/http's: the request's memory is
		// released once ServeHTTP returns, and the pooled write buffer
		// is held only while a write is under way.
		ReadBufferSize:  1024,
		WriteBufferSize: 16 << 10,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     func(*http.Request) bool { return true }, // checked in ServeHTTP
	}
	return h
}

// ServeHTTP upgrades the request and hands the connection to its own
// goroutine, so that net/http's per-request memory is released at once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.origins.Allow(r) {
		http.Error(w, "roomwire: origin not allowed", http.StatusForbidden)
		return
	}
	var user json.RawMessage
	if h.opts.Authenticate != nil {
		var err error
		if user, err = h.opts.Authenticate(r); err != nil {
			http.Error(w, "roomwire: unauthorized", http.StatusUnauthorized)
			return
		}
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has written the HTTP error
	}
	c := &conn{h: h, ws: ws, user: user, Quit: conns.NewQuit()}
	if !h.conns.Add(c) {
		c.closeNow(room.ReasonShutdown)
		return
	}
	go c.run()
}

// Shutdown closes every connection that has not ended yet (sessions closed
// by the hub have already told theirs) and waits for their goroutines, or
// for ctx.
func (h *Handler) Shutdown(ctx context.Context) error {
	return h.conns.Shutdown(ctx, room.ReasonShutdown)
}

// closeNormal answers a peer that went away by itself.
var closeNormal = room.CloseReason{Code: websocket.CloseNormalClosure, Text: "bye", Reconnect: true}

// conn is one WebSocket connection. Its run goroutine is the only reader and
// starts the only writer; run returns after the writer has.
type conn struct {
	h    *Handler
	ws   *websocket.Conn
	user json.RawMessage

	*conns.Quit
}

// closeNow writes a close frame and closes the socket; only for use before
// the writer goroutine exists.
func (c *conn) closeNow(reason room.CloseReason) {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(reason.Code, reason.Text), time.Now().Add(c.h.opts.WriteTimeout))
	c.ws.Close()
}

func (c *conn) run() {
	h := c.h
	defer h.conns.Remove(c)
	c.ws.SetReadLimit(h.opts.MaxMessageBytes)
	w, err := c.hello()
	if err != nil {
		reason := room.ReasonProtocol
		if errors.Is(err, room.ErrClosed) {
			reason = room.ReasonShutdown // the hub is shutting down
		} else {
			reason.Text = truncate(err.Error(), 120) // a close reason is at most 123 bytes
		}
		c.closeNow(reason)
		return
	}
	// The session is attached already (HelloAttach); a failed welcome
	// detaches it again.
	sess, gen := w.Session, w.Gen
	c.ws.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, w.Body); err != nil {
		sess.Detach(gen)
		c.ws.Close()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.write(sess, w.Ack)
	}()
	err = c.read(ctx, sess)
	cancel()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.End(room.ReasonHeartbeat)
	} else {
		c.End(closeNormal) // no-op if a reason was already given
	}
	<-writerDone
	c.ws.Close()
	sess.Detach(gen)
}

// hello reads the first message and opens or resumes the session; the
// caller writes the welcome.
func (c *conn) hello() (outbox.Welcome, error) {
	opts := c.h.opts
	c.ws.SetReadDeadline(time.Now().Add(opts.HelloTimeout))
	_, raw, err := c.ws.ReadMessage()
	if err != nil {
		return outbox.Welcome{}, err
	}
	env, err := room.ParseEnvelope(raw)
	if err != nil {
		return outbox.Welcome{}, err
	}
	return c.h.reg.HelloAttach(env, "ws", c.user, c.End)
}

// read is the connection's read loop: it returns when the peer goes away,
// misses its heartbeat, sends an oversize frame, or the writer ends.
func (c *conn) read(ctx context.Context, sess *outbox.Session) error {
	pongWait := c.h.opts.PongWait
	c.ws.SetReadDeadline(time.Now().Add(pongWait))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(pongWait))
	})
	for {
		_, raw, err := c.ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) && !errors.Is(err, net.ErrClosed) {
				c.h.log.Debug("ws read", "sid", sess.ID(), "err", err)
			}
			return err
		}
		c.ws.SetReadDeadline(time.Now().Add(pongWait))
		sess.Receive(ctx, raw)
	}
}

// write is the connection's only writer. It sends pings, and drains the
// session's queue into as few frames as possible: every message waiting
// when it wakes goes into one frame, separated by newlines.
func (c *conn) write(sess *outbox.Session, after uint64) {
	opts := c.h.opts
	ping := time.NewTicker(opts.PongWait * 9 / 10)
	defer ping.Stop()
	var (
		items []outbox.Item
		buf   []byte
	)
	// flush writes everything the session has queued after `after` as one
	// frame (messages separated by '\n').
	flush := func() error {
		items = sess.Pull(items[:0], after, opts.MaxFrameBytes)
		if len(items) == 0 {
			return nil
		}
		buf = buf[:0]
		for i, it := range items {
			if i > 0 {
				buf = append(buf, '\n')
			}
			buf = it.AppendTo(buf)
			if it.Seq > 0 {
				after = it.Seq
			}
		}
		c.ws.SetWriteDeadline(time.Now().Add(opts.WriteTimeout))
		err := c.ws.WriteMessage(websocket.TextMessage, buf)
		if cap(buf) > 4*opts.MaxFrameBytes {
			buf = nil // do not keep a one-off huge buffer
		}
		return err
	}
	// The wake signal is shared with the connection this one replaced,
	// whose writer may have taken it: drain once before waiting.
	if err := flush(); err != nil {
		c.ws.Close()
		return
	}
	for {
		select {
		case <-c.Ended():
			r := c.Reason()
			c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(r.Code, r.Text), time.Now().Add(opts.WriteTimeout))
			// Give the peer a moment to answer the close frame; the
			// reader then sees it (or the deadline) and returns.
			c.ws.SetReadDeadline(time.Now().Add(time.Second))
			return
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(opts.WriteTimeout)); err != nil {
				c.ws.Close()
				return
			}
		case <-sess.Wake():
			if err := flush(); err != nil {
				c.ws.Close()
				return
			}
		}
	}
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
