package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/roomwire/roomwire/room"
)

type roomState int

const (
	roomJoining roomState = iota // the first joined reply has not arrived
	roomJoined
	roomLeaving // Leave sent, its reply has not arrived
	roomLeft    // left, failed, or the client closed
)

// Room is this client's membership of one room: a replica of the room's
// document, its members and their ephemeral values, kept in step with the
// server. Get one from Client.Join. All methods are safe for concurrent use.
//
// A Room holds two documents. The confirmed document is built only from
// what the server sent, in room seq order: the join snapshot (or a resync
// snapshot), then every patch in the room's total order — other members'
// broadcasts, and this client's own patches when their "ok" arrives. The
// local view is the confirmed document with this client's pending patches
// (sent, no verdict yet) applied on top, in order; it is what Doc returns
// and what Patch applies to.
type Room struct {
	c    *Client
	name string

	// All fields below are guarded by c.mu.
	state     roomState
	synced    bool // confirmed, version and seq hold the server's state
	rejoining bool // a join that replaces or continues the state is under way
	joinReq   *entry
	ready     chan struct{} // closed once joined, or once the join failed
	joinErr   error
	done      chan struct{} // closed when the room is left or the client closes
	err       error         // why it closed

	confirmed   []byte
	version     uint64
	seq         uint64
	pending     []*entry // own patches without a verdict, in send order
	outstanding int      // own patches and publishes without a verdict
	local       []byte   // confirmed with pending applied; valid unless dirty
	dirty       bool

	members map[string]Member
	values  map[valueKey]json.RawMessage
	changed chan struct{} // closed and replaced on every change

	box mailbox
}

func (c *Client) newRoom(name string) *Room {
	return &Room{
		c:       c,
		name:    name,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		members: map[string]Member{},
		values:  map[valueKey]json.RawMessage{},
		changed: make(chan struct{}),
		box:     mailbox{on: true, sig: make(chan struct{}, 1), eph: map[valueKey]Event{}},
	}
}

// Join joins the room called name and returns once the server's snapshot
// has arrived: the Room then holds the document, its version and seq, and
// the members. Joining a room already joined returns the same Room. While
// the client is offline the join waits in the outbox.
//
// If ctx ends first, Join returns ctx's error and the join goes on in the
// background: a later Join returns the room (and its Leave undoes it).
func (c *Client) Join(ctx context.Context, name string) (*Room, error) {
	for {
		c.mu.Lock()
		if c.closed {
			err := c.closedErr()
			c.mu.Unlock()
			return nil, err
		}
		r := c.rooms[name]
		if r != nil && r.state == roomLeaving {
			// Join again once the leave is through.
			done := r.done
			c.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if r == nil {
			r = c.newRoom(name)
			c.rooms[name] = r
			e := c.newEntry(room.TypeJoin, r, nil)
			r.joinReq = e
			c.enqueue(e)
		}
		ready := r.ready
		c.mu.Unlock()
		select {
		case <-ready:
			c.mu.Lock()
			err := r.joinErr
			c.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return r, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Room returns the room called name if this client has joined it, else nil.
func (c *Client) Room(name string) *Room {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[name]
	if r == nil || !r.synced {
		return nil
	}
	return r
}

// Name returns the room's name.
func (r *Room) Name() string { return r.name }

// Doc returns the local view of the document (the confirmed document with
// this client's pending patches applied) and the confirmed version. Do not
// modify the returned bytes.
func (r *Room) Doc() (doc []byte, version uint64) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.view(), r.version
}

// Confirmed returns the confirmed document, built only from what the
// server sent, its version and the last room seq applied. Do not modify the
// returned bytes.
func (r *Room) Confirmed() (doc []byte, version, seq uint64) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.confirmed, r.version, r.seq
}

// Pending returns the number of this client's patches that await the
// server's verdict.
func (r *Room) Pending() int {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return len(r.pending)
}

// Members returns the room's members, sorted by session id.
func (r *Room) Members() []Member {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	out := make([]Member, 0, len(r.members))
	for _, m := range r.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.SID, b.SID) })
	return out
}

// Ephemeral returns the latest ephemeral value member from has set under
// key, and whether there is one. Values of members that left are gone.
func (r *Room) Ephemeral(from, key string) (json.RawMessage, bool) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	v, ok := r.values[valueKey{from, key}]
	return v, ok
}

// Err returns why the room closed (ErrClosed after Leave), or nil while
// it is joined.
func (r *Room) Err() error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.err
}

// Events returns the room's event channel; every call returns the same
// channel. Events are kept from the join on (up to Options.EventBuffer
// durable ones), so none is missed between Join and the first call, which
// starts the delivery. See the package documentation for the delivery
// model. The channel is closed when the room is left or the client closes;
// events still undelivered then are dropped.
func (r *Room) Events() <-chan Event {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.box.ch == nil {
		r.box.ch = make(chan Event)
		if c.closed || r.state == roomLeft {
			close(r.box.ch)
		} else {
			c.wg.Add(1)
			go r.pump()
		}
	}
	return r.box.ch
}

// usable returns nil if r accepts operations. Called with c.mu held.
func (r *Room) usable() error {
	if r.c.closed {
		return r.c.closedErr()
	}
	if r.state == roomLeft || r.state == roomLeaving {
		if r.err != nil {
			return r.err
		}
		return fmt.Errorf("%w: room %q has been left", ErrClosed, r.name)
	}
	return nil
}

// Patch applies ops, an RFC 6902 patch (a JSON array), to the local view
// at once and sends it with base = the confirmed version; offline, it waits
// in the outbox. It fails without sending anything if ops does not apply
// to the local view (the error wraps room.ErrBadPatch, ErrTestFailed or
// ErrTooLarge), if the outbox is full, or if the room is closed.
//
// The server is the only judge. Its ok puts the patch into the confirmed
// document in its place in the room's order; its refusal removes it from
// the local view and is reported as an EventRejected. Whenever the
// confirmed document changes, the local view is rebuilt (rebased): the
// pending patches are applied again on the new confirmed document, and one
// that no longer applies is left out of the view until its verdict — which
// the server sends for every patch, and which then is almost always a
// refusal.
//
// Refusals with code rate_limited or internal are transient: the client
// sends the same patch (same cid) again with backoff (20 ms doubling, full
// jitter), up to 10 times, before it reports them.
//
// One caveat comes from the protocol: if the connection breaks while a
// refusal is on its way, the client cannot tell and sends the patch again,
// and the server, which keeps no record of refusals, may accept the copy.
// The client then applies it where the server did and reports an
// EventPatch with this client's CID.
func (r *Room) Patch(ops json.RawMessage) error {
	ops, err := compactJSON(ops, '[')
	if err != nil {
		return err
	}
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if len(c.inflight) >= c.opts.MaxPending {
		return ErrOutboxFull
	}
	next, err := room.ApplyPatch(r.view(), ops, c.opts.Limits)
	if err != nil {
		return fmt.Errorf("client: patch does not apply to the local document: %w", err)
	}
	base := r.version
	e := c.newEntry(room.TypePatch, r, func(env *room.Envelope) { env.Base, env.Ops = &base, ops })
	if len(e.body) > c.opts.MaxMessageBytes {
		return fmt.Errorf("%w: patch message of %d bytes, the limit is %d", room.ErrTooLarge, len(e.body), c.opts.MaxMessageBytes)
	}
	r.pending = append(r.pending, e)
	r.outstanding++
	r.local = next
	c.enqueue(e)
	r.notify()
	return nil
}

// Publish sends data (any JSON value) as a durable event to the room's
// other members; offline, it waits in the outbox. The server numbers it in
// the room's order; a refusal is reported as an EventRejected. Publish
// does not wait for the server: use Settle for that.
func (r *Room) Publish(data json.RawMessage) error {
	data, err := compactJSON(data, 0)
	if err != nil {
		return err
	}
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if len(c.inflight) >= c.opts.MaxPending {
		return ErrOutboxFull
	}
	e := c.newEntry(room.TypePub, r, func(env *room.Envelope) { env.Data = data })
	if len(e.body) > c.opts.MaxMessageBytes {
		return fmt.Errorf("%w: publish message of %d bytes, the limit is %d", room.ErrTooLarge, len(e.body), c.opts.MaxMessageBytes)
	}
	r.outstanding++
	c.enqueue(e)
	r.notify()
	return nil
}

// SetEphemeral sets this client's ephemeral value under key (a cursor,
// a typing flag) for the room's other members. Latest value wins: a value
// not yet sent is replaced, and while offline only the latest per key is
// kept, to be sent on reconnect. The server caps the rate and coalesces
// too. Key is 1 to room.MaxEphemeralKey bytes; data is any JSON value.
func (r *Room) SetEphemeral(key string, data json.RawMessage) error {
	if key == "" || len(key) > room.MaxEphemeralKey {
		return fmt.Errorf("%w: an ephemeral key is 1 to %d bytes", room.ErrBadRequest, room.MaxEphemeralKey)
	}
	data, err := compactJSON(data, 0)
	if err != nil {
		return err
	}
	body, _ := encode(&room.Envelope{Type: room.TypeEph, Room: r.name, Key: key, Data: data})
	c := r.c
	if len(body) > c.opts.MaxMessageBytes {
		return fmt.Errorf("%w: ephemeral message of %d bytes, the limit is %d", room.ErrTooLarge, len(body), c.opts.MaxMessageBytes)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	k := ephKey{r.name, key}
	if _, ok := c.eph[k]; !ok {
		if len(c.eph) >= c.opts.MaxPending {
			return ErrOutboxFull
		}
		c.ephOrder = append(c.ephOrder, k)
	}
	c.eph[k] = body
	if c.conn != nil {
		c.signal()
	}
	return nil
}

// Leave leaves the room and waits for the server to confirm; other members
// see this client leave. The room's event channel closes. Offline, the
// leave waits in the outbox (and a client that comes back with a new
// session simply does not rejoin the room).
func (r *Room) Leave(ctx context.Context) error {
	c := r.c
	c.mu.Lock()
	if c.closed || r.state == roomLeft {
		c.mu.Unlock()
		return nil
	}
	var e *entry
	if r.state != roomLeaving {
		r.state = roomLeaving
		for k := range c.eph { // the server would refuse them after the leave
			if k.room == r.name {
				delete(c.eph, k)
			}
		}
		e = c.newEntry(room.TypeLeave, r, nil)
		e.result = make(chan error, 1)
		c.enqueue(e)
	}
	done := r.done
	c.mu.Unlock()
	if e == nil { // someone else is leaving it: wait for them
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case err := <-e.result:
		return err
	case <-done:
		// The room closed; the reply, if any, was handed over in the
		// same critical section.
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case err := <-e.result:
			return err
		default:
			return nil
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Settle waits until every patch and publish this client has sent to the
// room has its verdict from the server (accepted or rejected).
func (r *Room) Settle(ctx context.Context) error {
	return r.wait(ctx, func() bool { return r.outstanding == 0 })
}

// WaitSeq waits until this client has applied room seq seq (for example
// one that another client's ok reported): read-your-writes across clients.
func (r *Room) WaitSeq(ctx context.Context, seq uint64) error {
	return r.wait(ctx, func() bool { return r.synced && !r.rejoining && r.seq >= seq })
}

// wait waits until cond (called with c.mu held) holds, the room closes, or
// ctx ends.
func (r *Room) wait(ctx context.Context, cond func() bool) error {
	c := r.c
	for {
		c.mu.Lock()
		if cond() {
			c.mu.Unlock()
			return nil
		}
		if r.state == roomLeft {
			err := r.err
			c.mu.Unlock()
			return err
		}
		ch := r.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notify wakes r's waiters. Called with c.mu held.
func (r *Room) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// emit queues ev for the application. Called with c.mu held.
func (r *Room) emit(ev Event) {
	ev.Room = r.name
	r.box.push(ev, r.c.opts.EventBuffer)
}

// view returns the local view, rebuilding it if the confirmed document or
// the pending list changed. Called with c.mu held.
func (r *Room) view() []byte {
	if !r.dirty {
		return r.local
	}
	doc := r.confirmed
	for _, e := range r.pending {
		next, err := room.ApplyPatch(doc, e.ops, r.c.opts.Limits)
		e.skipped = err != nil
		if err == nil {
			doc = next
		}
	}
	r.local, r.dirty = doc, false
	return doc
}

// finish closes the room for good with err. Called with c.mu held.
func (r *Room) finish(err error) {
	if r.state == roomLeft {
		return
	}
	r.state = roomLeft
	r.err = err
	if r.joinReq != nil {
		r.joinReq = nil
	}
	select {
	case <-r.ready:
	default:
		r.joinErr = err
		close(r.ready)
	}
	close(r.done)
	r.notify()
}

// compactJSON validates raw as one JSON value (starting with first, if
// first is not 0) and returns it compacted.
func compactJSON(raw json.RawMessage, first byte) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, fmt.Errorf("%w: %v", room.ErrBadRequest, err)
	}
	if b.Len() == 0 || (first != 0 && b.Bytes()[0] != first) {
		return nil, fmt.Errorf("%w: want a JSON %s", room.ErrBadRequest, map[byte]string{'[': "array", 0: "value"}[first])
	}
	return b.Bytes(), nil
}
