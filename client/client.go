package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/roomwire/roomwire/room"
)

// Options configures a Client. The zero value (or nil) gives the documented
// defaults.
type Options struct {
	// Transports lists the transports to use, best first. The first
	// connection tries them in this order and keeps the first that
	// works; a reconnect starts with the one that worked last; while
	// connected over any but the first, the client keeps checking
	// whether a better one works (UpgradeInterval) and moves the session
	// there. Name one to force it. Default: TransportWS, TransportSSE,
	// TransportLongPoll.
	Transports []string
	// Header is sent with every handshake (for example Authorization).
	Header http.Header
	// User is the user info other members see (a JSON object), unless
	// the server's auth hook supplies it.
	User json.RawMessage
	// TLSConfig, if set, is used for https and wss URLs.
	TLSConfig *tls.Config
	// NetDialContext, if set, opens the TCP connections.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// MinBackoff and MaxBackoff bound the delay before reconnect attempt
	// n: a random duration in [0, min(MaxBackoff, MinBackoff*2^n)] (full
	// jitter). N clients dropped at once therefore make about
	// N/MinBackoff connection attempts per second while they reconnect
	// (see the package documentation). Defaults 1 s and 20 s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// HandshakeTimeout bounds one connection attempt over one transport,
	// hello to welcome (for SSE, to the probe's answer). Default 10 s.
	HandshakeTimeout time.Duration
	// ProbeTimeout bounds the check for a proxy that buffers the SSE
	// stream: a ping is posted when the stream opens, and unless its pong
	// arrives on the stream within ProbeTimeout (counted from the stream
	// request) the client gives up on SSE for this connection and tries
	// the next transport (long-polling), resuming the same session.
	// Default 2 s.
	ProbeTimeout time.Duration
	// UpgradeInterval: while connected over a transport other than the
	// first of Transports, the client checks after a random delay in
	// [UpgradeInterval/2, UpgradeInterval*3/2] whether a better one
	// works — a WebSocket handshake with no hello; for SSE, a throwaway
	// session whose stream must pass the probe — and if so resumes the
	// session there, with no gap or duplicate. After each check that
	// finds nothing better the interval doubles, up to 8 times
	// UpgradeInterval. Default 30 s; negative: never upgrade.
	UpgradeInterval time.Duration
	// PingInterval: when nothing has arrived for this long, the client
	// sends a ping. Default 20 s.
	PingInterval time.Duration
	// ReadTimeout: a connection on which nothing (not even a ping, or
	// an SSE keepalive comment) arrives for this long is dead, and the
	// client reconnects. It must exceed PingInterval plus a round trip,
	// and, since it also bounds each long-poll, the server's poll hold
	// (25 s by default). Default 45 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds every write. Default 10 s.
	WriteTimeout time.Duration

	// MaxPending bounds the client outbox: messages (patches, publishes,
	// joins, leaves) waiting to be sent or for the server's verdict,
	// across all rooms. Past it, Patch and Publish fail with
	// ErrOutboxFull. Default 1024.
	MaxPending int
	// MaxMessageBytes is the largest message the client sends, and the
	// most it puts in one frame; it must not exceed the server's limit.
	// Default 64 KiB, the server's default.
	MaxMessageBytes int
	// EventBuffer bounds each room's queue of undelivered durable events
	// (see Room.Events). Default 1024.
	EventBuffer int
	// Limits bounds documents and patches when the client applies them.
	// Give it the server's limits (zero fields: the same defaults as the
	// server's).
	Limits room.Limits
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var d Options
	if o != nil {
		d = *o
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setDur(&d.MinBackoff, time.Second)
	setDur(&d.MaxBackoff, 20*time.Second)
	setDur(&d.HandshakeTimeout, 10*time.Second)
	setDur(&d.PingInterval, 20*time.Second)
	setDur(&d.ReadTimeout, 45*time.Second)
	setDur(&d.WriteTimeout, 10*time.Second)
	setDur(&d.ProbeTimeout, 2*time.Second)
	if d.UpgradeInterval == 0 {
		d.UpgradeInterval = 30 * time.Second
	}
	if d.MaxBackoff < d.MinBackoff {
		d.MaxBackoff = d.MinBackoff
	}
	if d.MaxPending <= 0 {
		d.MaxPending = 1024
	}
	if d.MaxMessageBytes <= 0 {
		d.MaxMessageBytes = 64 << 10
	}
	if d.EventBuffer <= 0 {
		d.EventBuffer = 1024
	}
	d.Limits = d.Limits.WithDefaults()
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return d
}

// State is a client's connection state.
type State int

// The states. A client starts Connecting; it is Connected while a session
// is established, Disconnected while it waits to reconnect, and Closed for
// good after Close or a terminal error.
const (
	StateConnecting State = iota
	StateConnected
	StateDisconnected
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Stats are counts since the client was created, for metrics and tests.
type Stats struct {
	// Transport names the current (or last) connection's transport.
	Transport string
	// SessionID is the server's id for the current session.
	SessionID string
	// Sessions counts sessions established: the first connection, every
	// reconnect that resumed (Resumes counts those too) and every one
	// that had to start a new session and rejoin its rooms.
	Sessions int
	Resumes  int
	// Drops counts connections lost.
	Drops int
	// Upgrades counts moves of the session to a better transport while
	// connected (not counted in Sessions, Resumes or Drops).
	Upgrades int
	// Retries counts messages sent again after a transient refusal
	// (rate_limited or internal).
	Retries int
	// LastClose is why the last connection ended (a *CloseError when the
	// server said).
	LastClose error
}

// Client is a connection to a roomwire server that survives the network:
// it reconnects, resumes its session and rejoins its rooms by itself, and
// queues what it sends while offline. Create one with Dial or New; all
// methods are safe for concurrent use.
type Client struct {
	opts       Options
	transports []transport
	prefix     string // client message ids: prefix + "-" + counter
	log        *slog.Logger
	ctx        context.Context // ends when the client closes
	cancel     context.CancelFunc
	wg         sync.WaitGroup // run and the rooms' event pumps
	done       chan struct{}  // closed once everything has stopped
	wake       chan struct{}  // capacity 1: the writer has something to send

	mu        sync.Mutex
	state     State
	stateCh   chan struct{} // closed and replaced on every state change
	closed    bool
	err       error // why the client closed (nil after Close)
	conn      conn  // current connection, nil while disconnected
	sid       string
	token     string
	lastSSeq  uint64 // highest session seq applied; the messages up to it are contiguous
	ackedSSeq uint64 // highest session seq acknowledged on the current connection
	lastRecv  time.Time
	counter   uint64
	rooms     map[string]*Room
	inflight  []*entry          // awaiting the server's verdict, in send order
	byCID     map[string]*entry // inflight by client message id
	rejected  map[string]*entry // recent rejections, see onOK
	rejFIFO   []string
	sendq     []*entry               // still to write on the current connection
	timers    map[*entry]*time.Timer // retries waiting, see retryLater
	eph       map[ephKey][]byte
	ephOrder  []ephKey
	stats     Stats
	pref      int    // index in transports of the one to try first
	hellos    uint64 // hellos (and SSE tickets) sent for this client's sessions
	upFails   int    // upgrade checks in a row that found nothing better
	// traceSSeq, if set (by tests), sees the session seq of every
	// durable message received, and whether it was a duplicate.
	traceSSeq func(sseq uint64, dup bool)
	sending   bool          // the writer has a frame under way
	sent      chan struct{} // closed and replaced whenever it is through
}

// entry is one client message that gets a verdict: join, leave, patch, pub.
type entry struct {
	kind string // room.TypeJoin, TypeLeave, TypePatch, TypePub
	cid  string
	room *Room
	body []byte
	ops  json.RawMessage // patch
	data json.RawMessage // pub

	settled   bool
	skipped   bool       // patch: does not apply to the local view
	committed uint64     // room seq of an ok that arrived while the room was resyncing
	attempts  int        // retries after rate_limited or internal refusals
	result    chan error // leave: capacity 1
}

// reply hands a leave's outcome to its waiter, once.
func (e *entry) reply(err error) {
	if e.result == nil {
		return
	}
	select {
	case e.result <- err:
	default:
	}
}

type ephKey struct{ room, key string }

// New returns a client for the server whose transports are mounted at
// base (for example "https://example.com/rt"; ws and wss URLs work too)
// and starts connecting in the background. Use Ready to wait for the
// session, or Dial to do both.
func New(base string, opts *Options) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("client: server URL: %w", err)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return nil, fmt.Errorf("client: server URL %q: scheme must be http, https, ws or wss", base)
	}
	o := opts.withDefaults()
	if len(o.User) > 0 && !json.Valid(o.User) {
		return nil, fmt.Errorf("client: Options.User is not valid JSON")
	}
	names := o.Transports
	if names == nil {
		names = defaultTransports
	}
	hc := newHTTPClient(u, &o)
	var ts []transport
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return nil, fmt.Errorf("%w: %q listed twice", ErrNoTransport, n)
		}
		t, err := newTransport(n, u, &o, hc)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("%w: %v", ErrNoTransport, names)
	}
	c := newClient(&o, ts)
	c.wg.Add(1)
	go c.run()
	go func() { c.wg.Wait(); close(c.done) }()
	return c, nil
}

// newClient returns a client that has not started.
func newClient(o *Options, ts []transport) *Client {
	var pre [12]byte
	rand.Read(pre[:])
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		opts:       *o,
		transports: ts,
		prefix:     base64.RawURLEncoding.EncodeToString(pre[:]),
		log:        o.Logger,
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		wake:       make(chan struct{}, 1),
		stateCh:    make(chan struct{}),
		rooms:      map[string]*Room{},
		byCID:      map[string]*entry{},
		rejected:   map[string]*entry{},
		eph:        map[ephKey][]byte{},
		timers:     map[*entry]*time.Timer{},
		sent:       make(chan struct{}),
	}
}

// Dial is New followed by Ready: it returns once the first session is
// established, or fails when ctx ends first or the server refuses the
// client for good; the client is then closed.
func Dial(ctx context.Context, base string, opts *Options) (*Client, error) {
	c, err := New(base, opts)
	if err != nil {
		return nil, err
	}
	if err := c.Ready(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Ready waits until the client has a session (StateConnected). It returns
// the client's error if it closes first, or ctx's.
func (c *Client) Ready(ctx context.Context) error {
	for {
		c.mu.Lock()
		st, ch, err := c.state, c.stateCh, c.err
		c.mu.Unlock()
		switch st {
		case StateConnected:
			return nil
		case StateClosed:
			if err == nil {
				err = ErrClosed
			}
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if last := c.Stats().LastClose; last != nil {
				return fmt.Errorf("%w (last connection error: %w)", ctx.Err(), last)
			}
			return ctx.Err()
		}
	}
}

// State returns the connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// WaitForStateChange waits until the state differs from from, and reports
// whether it did before ctx ended.
func (c *Client) WaitForStateChange(ctx context.Context, from State) bool {
	for {
		c.mu.Lock()
		st, ch := c.state, c.stateCh
		c.mu.Unlock()
		if st != from {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// Stats returns the client's counts.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Done is closed once the client has stopped: after Close, or after a
// terminal error (see Err). Every goroutine it started has ended by then.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped by itself: a *CloseError with a
// terminal code (errors.Is(err, ErrReplaced) for 4004), or an error that
// errors.Is ErrUnauthorized. It is nil while the client runs and after
// Close.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close stops the client: it closes the connection (the server keeps the
// session for its resume window, so other members see this client leave
// only then; call Room.Leave first to leave at once), closes every room's
// event channel, and waits for the client's goroutines. Messages still in
// the outbox are discarded. Close is idempotent and returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.setState(StateClosed)
		if c.conn != nil {
			c.conn.close(true)
		}
	}
	c.mu.Unlock()
	c.cancel()
	<-c.done
	return nil
}

// setState changes the state and wakes its waiters. Called with mu held.
func (c *Client) setState(s State) {
	if c.state == s || c.state == StateClosed {
		return
	}
	c.state = s
	close(c.stateCh)
	c.stateCh = make(chan struct{})
}

// closedErr is what operations on a closed client return.
func (c *Client) closedErr() error {
	if c.err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, c.err)
	}
	return ErrClosed
}

// signal wakes the writer.
func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// terminal reports whether err forbids reconnecting.
func terminal(err error) bool {
	var ce *CloseError
	if errors.As(err, &ce) && ce.Terminal() {
		return true
	}
	return errors.Is(err, ErrUnauthorized)
}

// shutdown marks the client closed (with err if it was terminal) and
// closes every room.
func (c *Client) shutdown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && terminal(err) {
		c.err = err
		c.log.Warn("roomwire client: stopped", "err", err)
	}
	c.closed = true
	c.setState(StateClosed)
	if err != nil {
		c.stats.LastClose = err
	}
	cause := c.closedErr()
	for _, r := range c.rooms {
		r.finish(cause)
	}
	c.rooms = map[string]*Room{}
	for _, e := range c.inflight {
		e.settled = true
		e.reply(cause)
	}
	c.inflight, c.sendq = nil, nil
	for e, t := range c.timers {
		t.Stop()
		delete(c.timers, e)
	}
	clear(c.byCID)
	clear(c.eph)
	c.ephOrder = nil
}

// onWelcome sets up a new session or a resumed one. Called with mu held.
//
// A resumed session keeps its rooms; the server sends every durable message
// after the acknowledged one, and the client re-sends every message that
// has no verdict yet (the server applies a patch or publish once per cid,
// so one it had already read is not applied twice).
//
// A new session (the resume window passed, or a different server) has no
// rooms: the client rejoins each with since = the last room seq it
// applied, then re-sends its patches and publishes.
func (c *Client) onWelcome(w *welcome, switched bool) {
	resumed := w.Resumed && w.SID == c.sid
	c.sid, c.token = w.SID, w.Token
	c.stats.SessionID = w.SID
	switch {
	case switched && resumed:
		c.stats.Upgrades++
	case resumed:
		c.stats.Sessions++
		c.stats.Resumes++
	default:
		c.stats.Sessions++
	}
	c.sendq = c.sendq[:0]
	if !resumed {
		c.lastSSeq = 0
		keep := make([]*entry, 0, len(c.inflight))
		var leaving []*entry
		for _, e := range slices.Clone(c.inflight) { // drop changes c.inflight
			switch e.kind {
			case room.TypeJoin:
				c.drop(e)
			case room.TypeLeave:
				c.drop(e)
				leaving = append(leaving, e)
			default:
				keep = append(keep, e)
			}
		}
		for _, e := range leaving {
			c.finishLeave(e.room) // a new session is in no room
			e.reply(nil)
		}
		names := make([]string, 0, len(c.rooms))
		for n := range c.rooms {
			names = append(names, n)
		}
		slices.Sort(names)
		joins := make([]*entry, 0, len(names))
		for _, n := range names {
			r := c.rooms[n]
			var since *uint64
			if r.synced {
				s := r.seq
				since = &s
				r.rejoining = true
			}
			e := c.newEntry(room.TypeJoin, r, func(env *room.Envelope) { env.Since = since })
			r.joinReq = e
			joins = append(joins, e)
		}
		c.inflight = append(joins, keep...)
		for _, e := range joins {
			c.byCID[e.cid] = e
		}
	}
	c.ackedSSeq = c.lastSSeq
	c.sendq = append(c.sendq, c.inflight...)
}

// newEntry builds a message of kind for r with a fresh client message id;
// set fills in the kind-specific fields. It does not queue it.
func (c *Client) newEntry(kind string, r *Room, set func(*room.Envelope)) *entry {
	c.counter++
	e := &entry{kind: kind, cid: c.prefix + "-" + strconv.FormatUint(c.counter, 36), room: r}
	env := room.Envelope{Type: kind, Room: r.name, CID: e.cid}
	if set != nil {
		set(&env)
	}
	e.ops, e.data = env.Ops, env.Data
	e.body, _ = encode(&env) // only validated JSON goes in
	return e
}

// encode marshals a client message without HTML escaping, so that the ops
// and data on the wire are byte for byte those the client applies itself
// (json.Marshal would turn "<" into "\u003c" in them).
func encode(env *room.Envelope) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(env); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// enqueue adds e to the outbox and, while connected, to the send queue.
// Called with mu held.
func (c *Client) enqueue(e *entry) {
	c.inflight = append(c.inflight, e)
	c.byCID[e.cid] = e
	if c.conn != nil {
		c.sendq = append(c.sendq, e)
		c.signal()
	}
}

// drop removes e from the outbox without a verdict. Called with mu held.
func (c *Client) drop(e *entry) {
	if e.settled {
		return
	}
	e.settled = true
	delete(c.byCID, e.cid)
	if t := c.timers[e]; t != nil {
		t.Stop()
		delete(c.timers, e)
	}
	if i := slices.Index(c.inflight, e); i >= 0 {
		c.inflight = slices.Delete(c.inflight, i, i+1)
	}
	if r := e.room; r != nil && (e.kind == room.TypePatch || e.kind == room.TypePub) {
		r.outstanding--
		if e.kind == room.TypePatch {
			if i := slices.Index(r.pending, e); i >= 0 {
				r.pending = slices.Delete(r.pending, i, i+1)
			}
		}
		r.notify()
	}
}

// rememberRejected keeps the last MaxPending rejected messages by cid.
// Called with mu held.
func (c *Client) rememberRejected(e *entry) {
	c.rejected[e.cid] = e
	c.rejFIFO = append(c.rejFIFO, e.cid)
	if len(c.rejFIFO) > c.opts.MaxPending {
		delete(c.rejected, c.rejFIFO[0])
		c.rejFIFO = slices.Delete(c.rejFIFO, 0, 1)
	}
}
