package room

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Options configures a Hub. The zero value (or nil) gives the documented
// defaults.
type Options struct {
	// Broker orders and fans out durable messages. Default: a new
	// MemoryBroker over a MemoryStore with Log.
	Broker Broker
	// Presence, if set, shares member lists with the other nodes of a
	// cluster: joined replies and presence messages then cover every
	// node's members. Default: none (presence is this hub's own).
	Presence Presence
	// Log bounds each room's log, the replay window for rejoins. Give the
	// broker's store the same limits.
	Log LogLimits
	// Limits bounds documents and patches.
	Limits Limits
	// MaxReplayBytes bounds a rejoin's replay: a rejoin whose missed
	// entries add up to more gets an explicit resync (the document)
	// instead, so that catching up cannot overflow the session's queue.
	// Default 1 MiB.
	MaxReplayBytes int
	// MaxRooms is the most rooms one session may be in at once. Default 100.
	MaxRooms int
	// Rate and Burst cap a session's durable operations (join, leave,
	// patch, pub). Default 500 per second with bursts of 1000.
	Rate  rate.Limit
	Burst int
	// EphemeralRate caps each member's ephemeral values per room; values
	// over the cap are coalesced (latest per key) and sent when the cap
	// allows, so the last value always arrives. Default 60 per second.
	EphemeralRate rate.Limit
	// Logger receives operational events. Default: discard.
	Logger *slog.Logger
}

// Hub owns rooms and the sessions in them. Create one with NewHub; there is
// no global hub. All methods are safe for concurrent use.
type Hub struct {
	opts   Options
	broker Broker
	log    *slog.Logger
	async  sync.WaitGroup // slow-consumer closes and other work the hub starts

	mu      sync.Mutex
	rooms   map[string]*Room
	clients map[string]*client
	closed  bool
}

type client struct {
	sess    Session
	user    json.RawMessage
	limiter *rate.Limiter

	mu    sync.Mutex
	rooms map[string]*Room

	// pmu serialises the session's Presence calls (see syncPresence).
	// Held across network calls; never taken under another lock.
	pmu sync.Mutex
}

// NewHub returns a hub with opts (nil means defaults).
func NewHub(opts *Options) *Hub {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.Log = o.Log.WithDefaults()
	o.Limits = o.Limits.WithDefaults()
	if o.MaxReplayBytes <= 0 {
		o.MaxReplayBytes = 1 << 20
	}
	if o.MaxRooms <= 0 {
		o.MaxRooms = 100
	}
	if o.Rate <= 0 {
		o.Rate = 500
	}
	if o.Burst <= 0 {
		o.Burst = 1000
	}
	if o.EphemeralRate <= 0 {
		o.EphemeralRate = 60
	}
	if o.Broker == nil {
		o.Broker = NewMemoryBroker(NewMemoryStore(o.Log))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Hub{opts: o, broker: o.Broker, log: o.Logger, rooms: map[string]*Room{}, clients: map[string]*client{}}
}

// Connect registers s with the hub; user is the member info others see in
// presence. A session is connected once, however many times its transport
// connection is replaced (resume). It fails with ErrClosed after Shutdown.
func (h *Hub) Connect(s Session, user json.RawMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if _, ok := h.clients[s.ID()]; !ok {
		h.clients[s.ID()] = &client{
			sess:    s,
			user:    user,
			limiter: rate.NewLimiter(h.opts.Rate, h.opts.Burst),
			rooms:   map[string]*Room{},
		}
	}
	return nil
}

// Disconnect removes s from every room it is in (others see it leave) and
// forgets it. Transports call it when a session ends for good, that is when
// its resume window has passed, not when a connection drops.
func (h *Hub) Disconnect(s Session) {
	h.mu.Lock()
	c := h.clients[s.ID()]
	delete(h.clients, s.ID())
	h.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	rooms := c.rooms
	c.rooms = map[string]*Room{}
	c.mu.Unlock()
	for _, r := range rooms {
		r.leave(c)
	}
}

// Handle carries out one client message from s (join, leave, patch, pub,
// eph, ping). Replies and errors go to s through Send. Handle may be called
// concurrently, also for one session; messages of one session are applied in
// the order of the calls. A Redis broker makes Handle wait for the network,
// so call it from the session's own reader, never under a lock.
func (h *Hub) Handle(ctx context.Context, s Session, e *Envelope) {
	h.mu.Lock()
	c := h.clients[s.ID()]
	h.mu.Unlock()
	if c == nil {
		s.Send(ErrorMessage(e.CID, fmt.Errorf("%w: session is not connected", ErrClosed)))
		return
	}
	if e.Type == TypePing {
		s.Send(&Message{Body: encode(&outMsg{Type: TypePong, Data: e.Data}), Key: "\x00pong"})
		return
	}
	if e.Type == TypeEph || (e.Type == TypeRelay && e.Key != "") {
		if r := c.room(e.Room); r != nil {
			r.ephemeral(c, e)
		} else {
			h.reply(c, errorMessage(e.Room, e.CID, ErrNotMember, nil))
		}
		return
	}
	switch e.Type {
	case TypeJoin, TypeLeave, TypePatch, TypePub, TypeSignal, TypeRelay:
	default:
		h.reply(c, errorMessage(e.Room, e.CID, fmt.Errorf("%w: %q", ErrUnknownType, e.Type), nil))
		return
	}
	if !c.limiter.Allow() {
		h.reply(c, errorMessage(e.Room, e.CID, ErrRateLimited, nil))
		return
	}
	if err := validRoom(e.Room); err != nil {
		h.reply(c, errorMessage(e.Room, e.CID, err, nil))
		return
	}
	switch e.Type {
	case TypeJoin:
		h.join(ctx, c, e)
	case TypeLeave:
		r := c.take(e.Room)
		if r == nil {
			h.reply(c, errorMessage(e.Room, e.CID, ErrNotMember, nil))
			return
		}
		r.leave(c)
		h.reply(c, durable(&outMsg{Type: TypeOK, Room: e.Room, CID: e.CID}))
	default:
		r := c.room(e.Room)
		if r == nil {
			h.reply(c, errorMessage(e.Room, e.CID, ErrNotMember, nil))
			return
		}
		switch e.Type {
		case TypePatch:
			r.patch(ctx, c, e)
		case TypePub:
			r.publish(ctx, c, e)
		default:
			r.direct(c, e)
		}
	}
}

func (h *Hub) join(ctx context.Context, c *client, e *Envelope) {
	c.mu.Lock()
	_, already := c.rooms[e.Room]
	full := !already && len(c.rooms) >= h.opts.MaxRooms
	c.mu.Unlock()
	if full {
		h.reply(c, errorMessage(e.Room, e.CID, fmt.Errorf("%w: a session may be in at most %d rooms", ErrTooLarge, h.opts.MaxRooms), nil))
		return
	}
	for {
		r, err := h.acquire(ctx, e.Room)
		if err != nil {
			h.reply(c, errorMessage(e.Room, e.CID, err, nil))
			return
		}
		if ok, added := r.join(c, e); ok {
			if added {
				h.syncPresence(ctx, c, e.Room)
			}
			return
		}
		// The room emptied and closed between acquire and join: retry
		// with a fresh one.
	}
}

// acquire returns the live room called name, creating and subscribing it.
func (h *Hub) acquire(ctx context.Context, name string) (*Room, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	r := h.rooms[name]
	if r != nil {
		h.mu.Unlock()
		<-r.ready
		if r.err != nil {
			return nil, r.err
		}
		return r, nil
	}
	r = newRoom(h, name)
	h.rooms[name] = r
	h.mu.Unlock()
	if err := r.subscribe(ctx); err != nil {
		h.mu.Lock()
		if h.rooms[name] == r {
			delete(h.rooms, name)
		}
		h.mu.Unlock()
		return nil, fmt.Errorf("joining room %q: %w", name, err)
	}
	return r, nil
}

// release drops r from the hub if it has no members left.
func (h *Hub) release(r *Room) {
	h.mu.Lock()
	r.mu.Lock()
	empty := len(r.members) == 0 && !r.closed
	if empty {
		r.closed = true
		if h.rooms[r.name] == r {
			delete(h.rooms, r.name)
		}
	}
	r.mu.Unlock()
	h.mu.Unlock()
	if empty {
		r.cancel()
		if r.presCancel != nil {
			r.presCancel()
		}
	}
}

// presenceTimeout bounds one Presence call.
const presenceTimeout = 5 * time.Second

// syncPresence tells Options.Presence whether c is a member of room name on
// this hub now: Join if it is, Leave if not. It runs after every local join
// and leave of c, outside every room lock, one call at a time per session;
// so however a join and a concurrent leave (Disconnect) interleave, the
// last call agrees with the final state. Errors are logged: presence is
// advisory, the room works without it.
func (h *Hub) syncPresence(ctx context.Context, c *client, name string) {
	p := h.opts.Presence
	if p == nil {
		return
	}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	sid := c.sess.ID()
	var info *Member
	if r := c.room(name); r != nil {
		r.mu.Lock()
		if m := r.members[sid]; m != nil {
			i := m.info
			info = &i
		}
		r.mu.Unlock()
	}
	// Not the caller's context: a join whose request ends must still be
	// recorded, and a leave has none.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), presenceTimeout)
	defer cancel()
	if info != nil {
		if err := p.Join(ctx, name, *info); err != nil {
			h.log.Warn("presence join", "room", name, "sid", sid, "err", err)
		}
		return
	}
	if err := p.Leave(ctx, name, sid); err != nil {
		h.log.Warn("presence leave", "room", name, "sid", sid, "err", err)
	}
}

// reply sends m to c, closing c if its queue is full.
func (h *Hub) reply(c *client, m *Message) {
	if err := c.sess.Send(m); err == ErrSlowConsumer {
		h.closeSlow(c.sess)
	}
}

// closeSlow closes s with ReasonSlowConsumer in its own goroutine: the
// caller may hold a room or broker lock, and Close leads to Disconnect.
func (h *Hub) closeSlow(s Session) {
	h.async.Add(1)
	go func() {
		defer h.async.Done()
		h.log.Info("closing slow consumer", "sid", s.ID())
		s.Close(ReasonSlowConsumer)
	}()
}

// Shutdown closes every session with ReasonShutdown (clients are told to
// reconnect), then waits until they are done or ctx ends, whichever comes
// first. Connect fails afterwards. It returns ctx.Err() if ctx ended first.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	sessions := make([]Session, 0, len(h.clients))
	for _, c := range h.clients {
		sessions = append(sessions, c.sess)
	}
	h.mu.Unlock()
	for _, s := range sessions {
		s.Close(ReasonShutdown)
	}
	for _, s := range sessions {
		select {
		case <-s.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan struct{})
	go func() { h.async.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	rooms := make([]*Room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rooms = append(rooms, r)
	}
	h.mu.Unlock()
	for _, r := range rooms {
		r.stop()
	}
	return nil
}

// Snapshot returns the document, version and last seq of room as this hub
// sees them, and false if no session of this hub is in the room.
func (h *Hub) Snapshot(room string) (doc []byte, version, seq uint64, ok bool) {
	h.mu.Lock()
	r := h.rooms[room]
	h.mu.Unlock()
	if r == nil {
		return nil, 0, 0, false
	}
	<-r.ready
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.closed {
		return nil, 0, 0, false
	}
	return r.doc, r.version, r.seq, true
}

// Stats are point-in-time counts, for metrics and tests.
type Stats struct {
	Sessions int
	Rooms    int
}

// Stats returns the hub's current counts.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Sessions: len(h.clients), Rooms: len(h.rooms)}
}

func (c *client) room(name string) *Room {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rooms[name]
}

func (c *client) take(name string) *Room {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[name]
	delete(c.rooms, name)
	return r
}

// MaxRoomName is the longest room name, in bytes.
const MaxRoomName = 128

func validRoom(name string) error {
	if name == "" || len(name) > MaxRoomName || !utf8.ValidString(name) {
		return fmt.Errorf("%w: a room name is 1 to %d bytes of UTF-8", ErrBadRoom, MaxRoomName)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character in room name", ErrBadRoom)
		}
	}
	return nil
}

// now is the hub's clock, for log ages.
func (h *Hub) now() time.Time { return time.Now() }
