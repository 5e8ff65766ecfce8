package room

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Room is one node's replica of a room: document, version, seq, the tail of
// the log and the local members. The replica changes only by applying the
// broker's entries in seq order (apply), so joins, which read the replica
// under the room lock, are atomic with the stream.
//
// Under mu only state changes and non-blocking Sends happen: never a network
// call, a broker call or a blocking channel operation.
type Room struct {
	name   string
	hub    *Hub
	ready  chan struct{} // closed once subscribe has finished
	err    error         // subscribe's error, read after ready
	cancel func()
	// presCancel ends the Presence watch (nil without Options.Presence).
	// Like cancel, set before ready closes.
	presCancel func()

	// wmu serialises this node's patch writers, from computing a patch
	// against the replica to its append, so that they never fail each
	// other's compare-and-set. Never held by onEntry; taken before mu.
	wmu sync.Mutex

	mu      sync.Mutex
	started bool     // the replica holds the subscription's state
	early   []*Entry // entries delivered before started
	closed  bool     // no members left; removed from the hub
	doc     []byte
	version uint64
	seq     uint64
	log     []logItem
	cids    map[string]*Entry // committed client message ids in the window
	cidFIFO []string
	pending map[string]bool // client message ids being appended
	members map[string]*member

	// Members on other nodes (Options.Presence), and their joins and
	// leaves that arrived before the watch's list was in place.
	remote      map[string]Member
	presStarted bool
	presEarly   []presenceEvent
}

type presenceEvent struct {
	event string
	m     Member
}

type logItem struct {
	e    *Entry
	body []byte // the entry as broadcast to other members, encoded once
}

// ephTarget is where an ephemeral value goes: every other member (to ""),
// or one member (a keyed relay).
type ephTarget struct{ key, to string }

type member struct {
	c    *client
	info Member

	// Ephemeral values over the rate cap wait here, latest per key, until
	// flush sends them.
	eph      *rate.Limiter
	ephWait  map[ephTarget]json.RawMessage
	ephTimer *time.Timer
}

func newRoom(h *Hub, name string) *Room {
	return &Room{
		name:    name,
		hub:     h,
		ready:   make(chan struct{}),
		cids:    map[string]*Entry{},
		pending: map[string]bool{},
		members: map[string]*member{},
		remote:  map[string]Member{},
	}
}

func (r *Room) subscribe(ctx context.Context) error {
	defer close(r.ready)
	st, cancel, err := r.hub.broker.Subscribe(ctx, r.name, r.onEntry)
	if err != nil {
		r.err = err
		return err
	}
	r.cancel = cancel
	var others []Member
	if p := r.hub.opts.Presence; p != nil {
		// After the broker subscription, like the broker a network call:
		// outside mu. Events until the list is in place wait in presEarly.
		var pcancel func()
		others, pcancel, err = p.Watch(ctx, r.name, r.onPresence)
		if err != nil {
			cancel()
			r.err = err
			return err
		}
		r.presCancel = pcancel
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hub.opts.Presence != nil {
		for _, m := range others {
			r.remote[m.SID] = m
		}
		r.presStarted = true
		for _, ev := range r.presEarly {
			r.applyPresence(ev)
		}
		r.presEarly = nil
	}
	r.doc, r.version, r.seq = st.Doc, st.Version, st.Seq
	for _, e := range st.Log {
		r.remember(e)
	}
	r.started = true
	for _, e := range r.early {
		r.apply(e)
	}
	r.early = nil
	return nil
}

// stop ends the broker subscription and pending timers (hub shutdown).
func (r *Room) stop() {
	<-r.ready
	r.mu.Lock()
	r.closed = true
	for _, m := range r.members {
		m.stopTimer()
	}
	r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
	if r.presCancel != nil {
		r.presCancel()
	}
}

// onPresence is the Presence callback: a member on another node joined or
// left. It runs in the watch's order and must not block.
func (r *Room) onPresence(event string, m Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := presenceEvent{event, m}
	if !r.presStarted {
		r.presEarly = append(r.presEarly, ev)
		return
	}
	r.applyPresence(ev)
}

// applyPresence updates the remote members and tells the local ones.
// Repeated events change nothing; events about a local member (a sid this
// node has) are recorded but not forwarded. Called with mu held.
func (r *Room) applyPresence(ev presenceEvent) {
	_, known := r.remote[ev.m.SID]
	switch {
	case ev.event == "join" && !known:
		r.remote[ev.m.SID] = ev.m
	case ev.event == "leave" && known:
		delete(r.remote, ev.m.SID)
	default:
		return
	}
	if r.members[ev.m.SID] != nil {
		return
	}
	m := ev.m
	msg := durable(&outMsg{Type: TypePresence, Room: r.name, Event: ev.event, Member: &m})
	for _, o := range r.members {
		r.send(o, msg)
	}
}

// onEntry is the broker callback: it runs in seq order and must not block.
func (r *Room) onEntry(e *Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		r.early = append(r.early, e)
		return
	}
	r.apply(e)
}

// apply advances the replica by e and fans it out: an ok to its sender, the
// broadcast to every other member. Called with mu held.
func (r *Room) apply(e *Entry) {
	if e.Seq <= r.seq {
		return // already in the snapshot
	}
	if e.Seq != r.seq+1 {
		// The Broker contract forbids gaps; a broken broker must not
		// silently corrupt the replica, so say it loudly.
		r.hub.log.Error("room log gap", "room", r.name, "have", r.seq, "got", e.Seq)
	}
	if e.Kind == KindPatch {
		doc := e.Doc
		if doc == nil {
			var err error
			if doc, err = ApplyPatch(r.doc, e.Ops, r.hub.opts.Limits); err != nil {
				r.hub.log.Error("committed patch does not apply to replica", "room", r.name, "seq", e.Seq, "err", err)
				doc = r.doc
			}
		}
		r.doc = doc
	}
	r.seq, r.version = e.Seq, e.Version
	it := r.remember(e)
	if len(r.members) == 0 {
		return
	}
	var ok *Message
	bcast := &Message{Body: it.body, Durable: true}
	for sid, m := range r.members {
		msg := bcast
		if sid == e.From {
			if ok == nil {
				ok = durable(&outMsg{Type: TypeOK, Room: r.name, CID: e.CID, Seq: u64(e.Seq), Ver: u64(e.Version)})
			}
			msg = ok
		}
		r.send(m, msg)
	}
}

// remember appends e to the replica log and the client-id index.
func (r *Room) remember(e *Entry) logItem {
	out := &outMsg{Room: r.name, CID: e.CID, Seq: u64(e.Seq), Ver: u64(e.Version), From: e.From}
	if e.Kind == KindPatch {
		out.Type, out.Ops = TypePatch, e.Ops
	} else {
		out.Type, out.Data = TypeEvent, e.Data
	}
	it := logItem{e: e, body: encode(out)}
	lim := r.hub.opts.Log
	r.log = trimLog(append(r.log, it), lim, r.hub.now(), func(it logItem) int64 { return it.e.Time })
	if e.CID != "" {
		r.cids[e.CID] = e
		r.cidFIFO = append(r.cidFIFO, e.CID)
		if len(r.cidFIFO) > max(lim.MaxEntries, 1024) {
			delete(r.cids, r.cidFIFO[0])
			r.cidFIFO[0] = ""
			r.cidFIFO = r.cidFIFO[1:]
		}
	}
	return it
}

// send enqueues m for member m; a full queue closes the session.
func (r *Room) send(m *member, msg *Message) {
	if err := m.c.sess.Send(msg); err == ErrSlowConsumer {
		r.hub.closeSlow(m.c.sess)
	}
}

func (r *Room) sendTo(c *client, msg *Message) {
	if err := c.sess.Send(msg); err == ErrSlowConsumer {
		r.hub.closeSlow(c.sess)
	}
}

// join adds c and sends the joined reply; ok false means the room has
// closed and the caller must acquire a new one; added means c was not a
// member before.
func (r *Room) join(c *client, e *Envelope) (ok, added bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false, false
	}
	sid := c.sess.ID()
	m, already := r.members[sid]
	if !already {
		m = &member{
			c:    c,
			info: Member{SID: sid, User: c.user, Transport: c.sess.Transport()},
			eph:  rate.NewLimiter(r.hub.opts.EphemeralRate, max(1, int(r.hub.opts.EphemeralRate))),
		}
		r.members[sid] = m
		c.mu.Lock()
		c.rooms[r.name] = r
		c.mu.Unlock()
	}
	members := make([]Member, 0, len(r.members)+len(r.remote))
	for _, o := range r.members {
		members = append(members, o.info)
	}
	for sid, m := range r.remote {
		if r.members[sid] == nil {
			members = append(members, m)
		}
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.SID, b.SID) })

	reply := &outMsg{Type: TypeJoined, Room: r.name, CID: e.CID, Members: members}
	var replay []logItem
	switch since := e.Since; {
	case since == nil:
		reply.Mode, reply.Seq, reply.Ver, reply.Data = ModeSnapshot, u64(r.seq), u64(r.version), r.doc
	case *since == r.seq:
		reply.Mode, reply.Seq, reply.Ver = ModeReplay, u64(r.seq), u64(r.version)
	case *since < r.seq && len(r.log) > 0 && r.log[0].e.Seq <= *since+1 &&
		replayBytes(r.log[*since+1-r.log[0].e.Seq:]) <= r.hub.opts.MaxReplayBytes:
		replay = r.log[*since+1-r.log[0].e.Seq:]
		reply.Mode, reply.Seq = ModeReplay, u64(*since)
	default:
		// The log no longer reaches back, the replay would be larger than
		// the document is worth, or the client claims a seq the room
		// never had: say so, and send the document.
		reply.Mode, reply.Seq, reply.Ver, reply.Data = ModeResync, u64(r.seq), u64(r.version), r.doc
	}
	r.sendTo(c, durable(reply))
	for _, it := range replay {
		r.sendTo(c, &Message{Body: it.body, Durable: true})
	}
	if !already {
		r.presence("join", m)
	}
	return true, !already
}

// presence tells every member but m that m joined or left. Called with mu held.
func (r *Room) presence(event string, m *member) {
	msg := durable(&outMsg{Type: TypePresence, Room: r.name, Event: event, Member: &m.info})
	for sid, o := range r.members {
		if sid != m.info.SID {
			r.send(o, msg)
		}
	}
}

// leave removes c; others see it leave. The room closes when empty.
func (r *Room) leave(c *client) {
	r.mu.Lock()
	m := r.members[c.sess.ID()]
	if m != nil {
		delete(r.members, c.sess.ID())
		m.stopTimer()
		r.presence("leave", m)
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	if m != nil {
		r.hub.syncPresence(context.Background(), c, r.name)
	}
	if empty {
		r.hub.release(r)
	}
}

// maxAppendAttempts bounds retries when another writer moves the version
// between computing a patch and appending it.
const maxAppendAttempts = 16

// patch applies e under the acceptance rule: the base is current, or the
// patch still applies (test operations included) to the current document.
func (r *Room) patch(ctx context.Context, c *client, e *Envelope) {
	if e.Base == nil || len(e.Ops) == 0 {
		r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: a patch needs \"base\" and \"ops\"", ErrBadRequest), nil))
		return
	}
	ops, err := compact(e.Ops)
	if err == nil && string(ops) == "[]" {
		err = fmt.Errorf("%w: an empty patch", ErrBadRequest)
	}
	if err != nil {
		r.sendTo(c, errorMessage(r.name, e.CID, err, nil))
		return
	}
	base := *e.Base
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for attempt := 1; ; attempt++ {
		r.mu.Lock()
		if r.dedup(c, e.CID) {
			r.mu.Unlock()
			return
		}
		v := r.version
		if base > v {
			r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: base %d is ahead of version %d", ErrConflict, base, v), u64(v)))
			r.mu.Unlock()
			return
		}
		doc, err := ApplyPatch(r.doc, ops, r.hub.opts.Limits)
		if err != nil {
			if base < v && !errors.Is(err, ErrTooLarge) {
				err = fmt.Errorf("%w: base %d is stale (now %d) and the patch does not apply: %v", ErrConflict, base, v, err)
			}
			r.sendTo(c, errorMessage(r.name, e.CID, err, u64(v)))
			r.mu.Unlock()
			return
		}
		r.markPending(e.CID)
		r.mu.Unlock()

		err = r.hub.broker.Append(ctx, r.name, &Entry{Kind: KindPatch, Version: v + 1, From: c.sess.ID(), CID: e.CID, Ops: ops}, doc)
		r.mu.Lock()
		delete(r.pending, e.CID)
		if errors.Is(err, ErrDuplicate) {
			r.answerDuplicate(c, e.CID)
			r.mu.Unlock()
			return
		}
		if errors.Is(err, ErrVersionConflict) && attempt < maxAppendAttempts {
			r.mu.Unlock()
			continue
		}
		if err != nil {
			r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("committing patch: %w", err), u64(r.version)))
		}
		r.mu.Unlock()
		return
	}
}

// publish appends a durable event.
func (r *Room) publish(ctx context.Context, c *client, e *Envelope) {
	if len(e.Data) == 0 {
		r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: pub needs \"data\"", ErrBadRequest), nil))
		return
	}
	data, err := compact(e.Data)
	if err != nil {
		r.sendTo(c, errorMessage(r.name, e.CID, err, nil))
		return
	}
	r.mu.Lock()
	if r.dedup(c, e.CID) {
		r.mu.Unlock()
		return
	}
	r.markPending(e.CID)
	r.mu.Unlock()
	err = r.hub.broker.Append(ctx, r.name, &Entry{Kind: KindEvent, From: c.sess.ID(), CID: e.CID, Data: data}, nil)
	r.mu.Lock()
	delete(r.pending, e.CID)
	switch {
	case errors.Is(err, ErrDuplicate):
		r.answerDuplicate(c, e.CID)
	case err != nil:
		r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("publishing: %w", err), nil))
	}
	r.mu.Unlock()
}

// answerDuplicate replies to a retry the broker recognised: with the
// original ok if the entry is in the client-id index, else not at all (the
// entry, carrying the cid, reaches the client as a broadcast). mu held.
func (r *Room) answerDuplicate(c *client, cid string) {
	if e := r.cids[cid]; e != nil {
		r.sendTo(c, durable(&outMsg{Type: TypeOK, Room: r.name, CID: cid, Seq: u64(e.Seq), Ver: u64(e.Version)}))
	}
}

// dedup reports whether cid was already applied (c gets the original ok
// again) or is being applied now (its ok will follow). Called with mu held.
func (r *Room) dedup(c *client, cid string) bool {
	if cid == "" {
		return false
	}
	if e := r.cids[cid]; e != nil {
		r.sendTo(c, durable(&outMsg{Type: TypeOK, Room: r.name, CID: cid, Seq: u64(e.Seq), Ver: u64(e.Version)}))
		return true
	}
	return r.pending[cid]
}

func (r *Room) markPending(cid string) {
	if cid != "" {
		r.pending[cid] = true
	}
}

// direct forwards a signal or a durable relay message to one other member.
// Nothing is forwarded unless both sessions are members of this room.
func (r *Room) direct(c *client, e *Envelope) {
	if e.To == "" || len(e.Data) == 0 {
		r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: %s needs \"to\" and \"data\"", ErrBadRequest, e.Type), nil))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	to := r.members[e.To]
	if to == nil || r.members[c.sess.ID()] == nil || e.To == c.sess.ID() {
		r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: %q is not another member of this room", ErrNotMember, e.To), nil))
		return
	}
	r.send(to, durable(&outMsg{Type: e.Type, Room: r.name, From: c.sess.ID(), CID: e.CID, Data: e.Data}))
}

// MaxEphemeralKey is the longest ephemeral key, in bytes.
const MaxEphemeralKey = 64

// ephemeral fans out a latest-value-wins message, at most EphemeralRate per
// second per member; over the cap, values wait (latest per key) for flush.
func (r *Room) ephemeral(c *client, e *Envelope) {
	if len(e.Key) == 0 || len(e.Key) > MaxEphemeralKey || len(e.Data) == 0 {
		r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: eph needs \"key\" (1 to %d bytes) and \"data\"", ErrBadRequest, MaxEphemeralKey), nil))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.members[c.sess.ID()]
	if m == nil {
		r.sendTo(c, errorMessage(r.name, e.CID, ErrNotMember, nil))
		return
	}
	t := ephTarget{key: e.Key}
	if e.Type == TypeRelay {
		// Latest-wins to one member; the target must share the room.
		if to := r.members[e.To]; to == nil || e.To == m.info.SID {
			r.sendTo(c, errorMessage(r.name, e.CID, fmt.Errorf("%w: %q is not another member of this room", ErrNotMember, e.To), nil))
			return
		}
		t.to = e.To
	}
	if m.ephWait == nil && m.eph.Allow() {
		r.sendEphemeral(m, t, e.Data)
		return
	}
	if m.ephWait == nil {
		m.ephWait = map[ephTarget]json.RawMessage{}
	}
	m.ephWait[t] = e.Data
	if m.ephTimer == nil {
		d := m.eph.Reserve().Delay()
		m.ephTimer = time.AfterFunc(d, func() { r.flush(m) })
	}
}

// flush sends a member's waiting ephemeral values.
func (r *Room) flush(m *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m.ephTimer = nil
	if r.members[m.info.SID] != m {
		return
	}
	for t, data := range m.ephWait {
		r.sendEphemeral(m, t, data)
	}
	m.ephWait = nil
}

// sendEphemeral sends an ephemeral value from a member: an eph to every
// other member, or a keyed relay to its one target if still here.
func (r *Room) sendEphemeral(from *member, t ephTarget, data json.RawMessage) {
	if t.to != "" {
		if to := r.members[t.to]; to != nil {
			r.send(to, &Message{
				Body: encode(&outMsg{Type: TypeRelay, Room: r.name, From: from.info.SID, Key: t.key, Data: data}),
				Key:  r.name + "\x00" + from.info.SID + "\x00" + t.key + "\x00" + t.to,
			})
		}
		return
	}
	msg := &Message{
		Body: encode(&outMsg{Type: TypeEph, Room: r.name, From: from.info.SID, Key: t.key, Data: data}),
		Key:  r.name + "\x00" + from.info.SID + "\x00" + t.key,
	}
	for sid, o := range r.members {
		if sid != from.info.SID {
			r.send(o, msg)
		}
	}
}

func (m *member) stopTimer() {
	if m.ephTimer != nil {
		m.ephTimer.Stop()
		m.ephTimer = nil
	}
}

func compact(raw json.RawMessage) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return b.Bytes(), nil
}

func replayBytes(items []logItem) int {
	n := 0
	for _, it := range items {
		n += len(it.body)
	}
	return n
}
