package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/roomwire/roomwire/room"
)

// inMsg is a decoded server message; which fields are set depends on T.
type inMsg struct {
	T       string          `json:"t"`
	SSeq    uint64          `json:"sseq"`
	Room    string          `json:"room"`
	CID     string          `json:"cid"`
	Mode    string          `json:"mode"`
	Seq     *uint64         `json:"seq"`
	V       *uint64         `json:"v"`
	From    string          `json:"from"`
	Key     string          `json:"key"`
	Event   string          `json:"event"`
	Code    json.RawMessage `json:"code"` // a string for errors, a number for close
	Msg     string          `json:"msg"`
	Reason  string          `json:"reason"` // close
	Ops     json.RawMessage `json:"ops"`
	Data    json.RawMessage `json:"data"`
	Member  *Member         `json:"member"`
	Members []Member        `json:"members"`
}

func parseMsg(line []byte) (*inMsg, error) {
	var m inMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, err
	}
	if m.T == "" {
		return nil, fmt.Errorf("no \"t\" in %.200q", line)
	}
	return &m, nil
}

func (m *inMsg) code() string {
	var s string
	if json.Unmarshal(m.Code, &s) == nil {
		return s
	}
	return string(m.Code)
}

// closeError is the reason carried by a "close" message (transports
// without close frames send one).
func (m *inMsg) closeError() *CloseError {
	n, _ := strconv.Atoi(string(m.Code))
	text := m.Reason
	if text == "" {
		text = m.Msg
	}
	return &CloseError{Code: n, Text: text}
}

func u64(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// handleFrame applies one frame of server messages. An error ends the
// connection (the client then reconnects and resumes).
func (c *Client) handleFrame(frame []byte) error {
	msgs := make([]*inMsg, 0, 8)
	for line := range bytes.SplitSeq(frame, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		m, err := parseMsg(line)
		if err != nil {
			return fmt.Errorf("client: undecodable server message: %w", err)
		}
		msgs = append(msgs, m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastRecv = time.Now()
	before := c.lastSSeq
	var err error
	for _, m := range msgs {
		if err = c.handle(m); err != nil {
			break
		}
	}
	if c.lastSSeq != before {
		c.signal() // acknowledge what this frame carried
	}
	return err
}

// handle applies one server message. Called with mu held.
func (c *Client) handle(m *inMsg) error {
	if m.SSeq != 0 {
		if c.traceSSeq != nil {
			c.traceSSeq(m.SSeq, m.SSeq <= c.lastSSeq)
		}
		if m.SSeq <= c.lastSSeq {
			return nil // already applied
		}
		if m.SSeq != c.lastSSeq+1 {
			return fmt.Errorf("client: session seq %d after %d", m.SSeq, c.lastSSeq)
		}
		c.lastSSeq = m.SSeq
	}
	switch m.T {
	case room.TypeJoined:
		c.onJoined(m)
	case room.TypeOK:
		c.onOK(m)
	case room.TypeError:
		c.onError(m)
	case room.TypePatch, room.TypeEvent:
		c.onEntry(m)
	case room.TypePresence:
		c.onPresence(m)
	case room.TypeEph:
		c.onEph(m)
	case room.TypePong:
	case room.TypeClose:
		return m.closeError()
	default:
		c.log.Debug("roomwire client: unknown message type", "t", m.T)
	}
	return nil
}

// onJoined takes a join reply: a snapshot, a replay (the entries follow),
// or a resync.
func (c *Client) onJoined(m *inMsg) {
	e := c.byCID[m.CID]
	r := c.rooms[m.Room]
	if e == nil || e.kind != room.TypeJoin || r == nil || e.room != r {
		return // the reply to a join re-sent after a resume: already had it
	}
	c.drop(e)
	if r.joinReq != e {
		return // superseded by a later join
	}
	r.joinReq = nil
	wasSynced := r.synced
	switch m.Mode {
	case room.ModeReplay:
		// The entries after seq follow in order; v comes with them, or
		// here when none do.
		r.seq = u64(m.Seq)
		if m.V != nil {
			r.version = *m.V
		}
		c.dropCommitted(r) // the replay starts after them
	default: // snapshot, resync
		r.confirmed, r.version, r.seq = m.Data, u64(m.V), u64(m.Seq)
		r.dirty = true
		c.dropCommitted(r) // in the snapshot
		if wasSynced {
			r.emit(Event{Kind: EventResync, Seq: r.seq, Version: r.version})
			c.log.Info("roomwire client: room resynced from a snapshot", "room", r.name, "seq", r.seq)
		}
	}
	r.synced, r.rejoining = true, false
	r.setMembers(m.Members, wasSynced)
	if r.state == roomJoining {
		r.state = roomJoined
		close(r.ready)
	}
	r.notify()
}

// dropCommitted settles r's messages whose ok arrived while r was being
// rejoined and that the new state includes. Called with mu held.
func (c *Client) dropCommitted(r *Room) {
	for _, p := range slices.Clone(c.inflight) {
		if p.room == r && p.committed != 0 && p.committed <= r.seq {
			c.drop(p)
		}
	}
}

// setMembers replaces the member list, reporting the differences as
// presence events when the room was already known (a rejoin).
func (r *Room) setMembers(ms []Member, report bool) {
	next := make(map[string]Member, len(ms))
	for _, m := range ms {
		next[m.SID] = m
	}
	gone := make([]string, 0)
	for sid := range r.members {
		if _, ok := next[sid]; !ok {
			gone = append(gone, sid)
		}
	}
	slices.Sort(gone)
	for _, sid := range gone {
		r.forgetValues(sid)
		if report {
			r.emit(Event{Kind: EventMemberLeave, Member: r.members[sid]})
		}
	}
	if report {
		for _, m := range ms { // sorted by the server
			if _, ok := r.members[m.SID]; !ok {
				r.emit(Event{Kind: EventMemberJoin, Member: m})
			}
		}
	}
	r.members = next
}

func (r *Room) forgetValues(sid string) {
	for k := range r.values {
		if k.from == sid {
			delete(r.values, k)
		}
	}
	r.box.forget(sid)
}

// onOK takes the server's acceptance of one of this client's messages.
func (c *Client) onOK(m *inMsg) {
	e := c.byCID[m.CID]
	if e == nil {
		// Either the ok of a message re-sent after a resume, whose
		// first ok already arrived (a duplicate), or one the client had
		// been told was rejected and re-sent because the connection
		// broke before the refusal arrived: the server may have applied
		// the copy, and then so must the client.
		if e = c.rejected[m.CID]; e != nil && m.Seq != nil {
			delete(c.rejected, m.CID)
			c.lateAccept(e, m)
		}
		return
	}
	r := e.room
	switch e.kind {
	case room.TypeLeave:
		c.drop(e)
		c.finishLeave(r)
		e.reply(nil)
		return
	case room.TypeJoin:
		return // joins are answered with "joined"
	}
	seq := u64(m.Seq)
	switch {
	case r.synced && seq <= r.seq:
		// The original ok of a message re-sent in a new session: the
		// entry is already in the confirmed state (replayed or in the
		// snapshot).
		c.drop(e)
		return
	case !r.synced || r.rejoining:
		// The state is about to be replaced or replayed; the replay
		// shows the entry again (with this cid), a snapshot includes it.
		e.committed = seq
		return
	case seq != r.seq+1:
		e.committed = seq
		c.rejoin(r, fmt.Sprintf("ok at seq %d after %d", seq, r.seq))
		return
	}
	if e.kind == room.TypePatch {
		doc, err := room.ApplyPatch(r.confirmed, e.ops, c.opts.Limits)
		if err != nil {
			c.resnapshot(r, fmt.Sprintf("own patch at seq %d does not apply: %v", seq, err))
			return
		}
		unchanged := !r.dirty && len(r.pending) > 0 && r.pending[0] == e && !e.skipped
		r.confirmed = doc
		r.dirty = r.dirty || !unchanged
	}
	r.seq, r.version = seq, u64(m.V)
	c.drop(e)
}

// lateAccept applies a patch or publish that had been reported rejected
// and was then accepted in a re-sent copy.
func (c *Client) lateAccept(e *entry, m *inMsg) {
	r := c.rooms[e.room.name]
	if r != e.room || !r.synced || r.rejoining || *m.Seq <= r.seq {
		return
	}
	if *m.Seq != r.seq+1 {
		c.rejoin(r, fmt.Sprintf("ok at seq %d after %d", *m.Seq, r.seq))
		return
	}
	ev := Event{Kind: EventPublish, Seq: *m.Seq, Version: u64(m.V), From: c.sid, CID: e.cid, Data: e.data}
	if e.kind == room.TypePatch {
		doc, err := room.ApplyPatch(r.confirmed, e.ops, c.opts.Limits)
		if err != nil {
			c.resnapshot(r, fmt.Sprintf("own patch at seq %d does not apply: %v", *m.Seq, err))
			return
		}
		r.confirmed, r.dirty = doc, true
		ev.Kind, ev.Ops, ev.Data = EventPatch, e.ops, nil
	}
	r.seq, r.version = *m.Seq, u64(m.V)
	r.emit(ev)
	r.notify()
}

// onError takes the server's refusal of one of this client's messages.
func (c *Client) onError(m *inMsg) {
	e := c.byCID[m.CID]
	if e == nil {
		if m.CID == "" {
			c.log.Warn("roomwire client: server error", "room", m.Room, "code", m.code(), "msg", m.Msg)
		}
		return // the refusal of a duplicate
	}
	r := e.room
	if e.committed != 0 {
		return // the refusal of a re-sent copy of an accepted message
	}
	serr := &ServerError{Room: m.Room, CID: m.CID, Code: m.code(), Msg: m.Msg, Version: m.V}
	if (serr.Code == room.CodeRateLimited || serr.Code == room.CodeInternal) && e.attempts < maxRetries &&
		(e.kind != room.TypeJoin || r.joinReq == e) {
		// Transient: send the same message (same cid) again later.
		d := backoff(e.attempts, retryBase, c.opts.MaxBackoff, nil)
		e.attempts++
		c.stats.Retries++
		c.log.Debug("roomwire client: retrying", "cid", e.cid, "code", serr.Code, "in", d, "attempt", e.attempts, "msg", serr.Msg)
		c.retryLater(e, d)
		return
	}
	if serr.Code == room.CodeConflict && m.V != nil && *m.V < r.version && r.synced {
		// The room's history went back (the server lost state): the
		// rejoin is answered with a resync.
		c.rejoin(r, fmt.Sprintf("conflict at version %d, below the confirmed %d", *m.V, r.version))
	}
	switch e.kind {
	case room.TypeJoin:
		c.drop(e)
		if r.joinReq != e {
			return
		}
		c.log.Warn("roomwire client: join refused", "room", r.name, "err", serr)
		delete(c.rooms, r.name)
		c.dropRoom(r)
		r.finish(serr)
	case room.TypeLeave:
		c.drop(e)
		if serr.Code == room.CodeNotMember {
			c.finishLeave(r) // a leave re-sent after it had taken effect
			e.reply(nil)
			return
		}
		if r.state == roomLeaving {
			r.state = roomJoined
		}
		e.reply(serr)
	default:
		c.drop(e)
		c.rememberRejected(e)
		if e.kind == room.TypePatch {
			r.dirty = true // rebase the remaining pending patches
		}
		r.emit(Event{Kind: EventRejected, CID: e.cid, Ops: e.ops, Data: e.data, Err: serr})
	}
}

// onEntry takes a durable room entry: another member's patch or event, a
// replayed one, or one of this client's own from an earlier session.
func (c *Client) onEntry(m *inMsg) {
	r := c.rooms[m.Room]
	if r == nil || !r.synced || r.rejoining || m.Seq == nil {
		return
	}
	seq := *m.Seq
	if seq <= r.seq {
		return
	}
	if seq != r.seq+1 {
		c.rejoin(r, fmt.Sprintf("entry at seq %d after %d", seq, r.seq))
		return
	}
	own := c.byCID[m.CID]
	if own != nil && (own.room != r || own.kind != entryKind(m.T)) {
		own = nil
	}
	if m.T == room.TypePatch {
		doc, err := room.ApplyPatch(r.confirmed, m.Ops, c.opts.Limits)
		if err != nil {
			c.resnapshot(r, fmt.Sprintf("patch at seq %d does not apply: %v", seq, err))
			return
		}
		r.confirmed, r.dirty = doc, true
	}
	r.seq, r.version = seq, u64(m.V)
	if own != nil {
		c.drop(own) // own message from an earlier session, now confirmed
		r.notify()
		return
	}
	ev := Event{Seq: seq, Version: r.version, From: m.From, CID: m.CID}
	if m.T == room.TypePatch {
		ev.Kind, ev.Ops = EventPatch, m.Ops
	} else {
		ev.Kind, ev.Data = EventPublish, m.Data
	}
	r.emit(ev)
	r.notify()
}

func (c *Client) onPresence(m *inMsg) {
	r := c.rooms[m.Room]
	if r == nil || !r.synced || m.Member == nil {
		return
	}
	switch m.Event {
	case "join":
		r.members[m.Member.SID] = *m.Member
		r.emit(Event{Kind: EventMemberJoin, Member: *m.Member})
	case "leave":
		delete(r.members, m.Member.SID)
		r.forgetValues(m.Member.SID)
		r.emit(Event{Kind: EventMemberLeave, Member: *m.Member})
	}
	r.notify()
}

func (c *Client) onEph(m *inMsg) {
	r := c.rooms[m.Room]
	if r == nil || !r.synced {
		return
	}
	r.values[valueKey{m.From, m.Key}] = m.Data
	r.emit(Event{Kind: EventEphemeral, From: m.From, Key: m.Key, Data: m.Data})
}

// rejoin repairs a room whose stream has a hole (which a correct server
// never causes): it joins again with since = the last seq applied, and
// ignores the room's entries until the reply, which replays or resyncs.
func (c *Client) rejoin(r *Room, why string) {
	if r.rejoining {
		return
	}
	c.log.Error("roomwire client: room stream out of order; rejoining", "room", r.name, "why", why)
	since := r.seq
	c.sendJoin(r, &since)
}

// resnapshot repairs a room whose confirmed document no longer matches the
// server's (a patch the server applied does not apply here: different
// Limits, or a bug): it joins again for a fresh snapshot.
func (c *Client) resnapshot(r *Room, why string) {
	if r.rejoining {
		return
	}
	c.log.Error("roomwire client: confirmed document diverged; resyncing", "room", r.name, "why", why)
	c.sendJoin(r, nil)
}

func (c *Client) sendJoin(r *Room, since *uint64) {
	r.rejoining = true
	e := c.newEntry(room.TypeJoin, r, func(env *room.Envelope) { env.Since = since })
	r.joinReq = e
	c.enqueue(e)
	r.notify()
}

// finishLeave completes a leave: the room is gone, and its outbox entries
// with it. Called with mu held.
func (c *Client) finishLeave(r *Room) {
	if c.rooms[r.name] == r {
		delete(c.rooms, r.name)
	}
	for _, e := range c.dropRoom(r) {
		e.reply(nil)
	}
	r.finish(fmt.Errorf("%w: room %q has been left", ErrClosed, r.name))
}

// dropRoom removes every outbox entry of r and returns them.
func (c *Client) dropRoom(r *Room) []*entry {
	var gone []*entry
	for _, e := range append([]*entry(nil), c.inflight...) {
		if e.room == r {
			c.drop(e)
			gone = append(gone, e)
		}
	}
	for k := range c.eph {
		if k.room == r.name {
			delete(c.eph, k)
		}
	}
	return gone
}

// entryKind returns the kind of client message a broadcast type answers.
func entryKind(t string) string {
	if t == room.TypeEvent {
		return room.TypePub
	}
	return t
}

// maxRetries bounds how often a message refused as rate_limited or
// internal is sent again before the refusal is reported; retry n waits a
// random delay in [0, min(MaxBackoff, retryBase*2^n)]. Most such refusals
// are momentary (a token bucket refilling at 500/s, a lost compare-and-set
// race), hence a base far below the reconnect backoff's.
const (
	maxRetries = 10
	retryBase  = 20 * time.Millisecond
)

// retryLater queues e again after d. Called with mu held.
func (c *Client) retryLater(e *entry, d time.Duration) {
	if old := c.timers[e]; old != nil {
		old.Stop()
	}
	c.timers[e] = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.timers[e] == nil {
			return // stopped by shutdown
		}
		delete(c.timers, e)
		if e.settled || c.closed || c.conn == nil {
			return // a reconnect sends every message without a verdict anyway
		}
		c.sendq = append(c.sendq, e)
		c.signal()
	})
}
