package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomwire/roomwire/room"
)

// PresenceOptions configures a Presence. Zero fields mean the defaults.
type PresenceOptions struct {
	// TTL is how long a node may go without a heartbeat before the other
	// nodes declare it dead and remove its members. Default 15 s.
	TTL time.Duration
	// Interval is the heartbeat and reaping period. Default TTL/3.
	Interval time.Duration
}

// PresenceEvent is a member joining or leaving a room, on any node.
type PresenceEvent struct {
	Event  string // "join" or "leave"
	Member room.Member
	Node   string // the node the member is (was) connected to
}

// Presence shares rooms' member lists between nodes through Redis, with
// expiry: every node heartbeats; a node that misses its heartbeats for TTL
// is declared dead by the others, which remove its members and publish
// their leaves. A crashed node's members therefore leave within TTL +
// Interval (20 s by default). A node that was declared dead while it was
// only slow puts its members back at its next heartbeat.
//
// Keys (besides the broker's):
//
//	{prefix}:{room}:mem   hash   sid -> {"sid","user","transport","node"}
//	{prefix}:{room}:pres  stream join/leave events (ev, m), MAXLEN ~ 1000
//	{prefix}:nodes        zset   node -> last heartbeat (Redis time, ms)
//	{prefix}:node:{node}:rooms set rooms in which node has members
//
// Give it to a hub as room.Options.Presence through ForHub. Create it with
// NewPresence; Close it after the hub's Shutdown and before the broker.
type Presence struct {
	b    *Broker
	opts PresenceOptions
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	local  map[string]map[string]room.Member // room -> sid -> member, on this node
	closed bool

	beats, failing int // heartbeats that worked, failures in a row; run's own
}

// NewPresence starts b's node's heartbeat.
func NewPresence(b *Broker, opts *PresenceOptions) *Presence {
	var o PresenceOptions
	if opts != nil {
		o = *opts
	}
	if o.TTL <= 0 {
		o.TTL = 15 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = o.TTL / 3
	}
	p := &Presence{b: b, opts: o, stop: make(chan struct{}), done: make(chan struct{}), local: map[string]map[string]room.Member{}}
	go p.run()
	return p
}

type memberRecord struct {
	room.Member
	Node string `json:"node"`
}

func (p *Presence) memKey(r string) string  { return p.b.prefix + ":{" + r + "}:mem" }
func (p *Presence) presKey(r string) string { return p.b.prefix + ":{" + r + "}:pres" }
func (p *Presence) nodesKey() string        { return p.b.prefix + ":nodes" }
func (p *Presence) roomsKey(node string) string {
	return p.b.prefix + ":node:{" + node + "}:rooms"
}

var presenceJoinScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'ev', 'join', 'm', ARGV[2])
return 1
`)

var presenceLeaveScript = redis.NewScript(`
local m = redis.call('HGET', KEYS[1], ARGV[1])
if not m then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'ev', 'leave', 'm', m)
return 1
`)

// presenceReapScript removes the members of node ARGV[1] from a room.
var presenceReapScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local ok, m = pcall(cjson.decode, all[i+1])
  if ok and m['node'] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'ev', 'leave', 'm', all[i+1])
    n = n + 1
  end
end
return n
`)

// presenceSnapshotScript returns a room's members and the presence stream's
// last id, atomically.
var presenceSnapshotScript = redis.NewScript(`
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {id, redis.call('HVALS', KEYS[1])}
`)

// heartbeatScript records node ARGV[1]'s heartbeat at Redis's time and
// returns whether it was registered before, and the nodes whose last
// heartbeat is older than ARGV[2] ms.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return {was and 1 or 0, dead}
`)

// forgetNodeScript unregisters a dead node, unless it came back.
var forgetNodeScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
`)

// Join records m as a member of room on this node, tells the other nodes,
// and returns the room's members on every node.
func (p *Presence) Join(ctx context.Context, r string, m room.Member) ([]room.Member, error) {
	rec, err := json.Marshal(memberRecord{Member: m, Node: p.b.node})
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.local[r] == nil {
		p.local[r] = map[string]room.Member{}
	}
	p.local[r][m.SID] = m
	p.mu.Unlock()
	// The rooms set first: a crash between the two leaves nothing the
	// reaper cannot find.
	if err := p.b.cmd.SAdd(ctx, p.roomsKey(p.b.node), r).Err(); err != nil {
		return nil, unavailable(err)
	}
	if err := presenceJoinScript.Run(ctx, p.b.cmd, []string{p.memKey(r), p.presKey(r)}, m.SID, string(rec)).Err(); err != nil {
		return nil, unavailable(err)
	}
	ms, _, err := p.snapshot(ctx, r)
	return ms, err
}

// Leave removes member sid from room and tells the other nodes.
func (p *Presence) Leave(ctx context.Context, r, sid string) error {
	p.mu.Lock()
	delete(p.local[r], sid)
	if len(p.local[r]) == 0 {
		delete(p.local, r)
	}
	p.mu.Unlock()
	if err := presenceLeaveScript.Run(ctx, p.b.cmd, []string{p.memKey(r), p.presKey(r)}, sid).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Members returns room's members on every node.
func (p *Presence) Members(ctx context.Context, r string) ([]room.Member, error) {
	ms, _, err := p.snapshot(ctx, r)
	return ms, err
}

func (p *Presence) snapshot(ctx context.Context, r string) ([]room.Member, string, error) {
	recs, id, err := p.records(ctx, r)
	ms := make([]room.Member, len(recs))
	for i, rec := range recs {
		ms[i] = rec.Member
	}
	return ms, id, err
}

func (p *Presence) records(ctx context.Context, r string) ([]memberRecord, string, error) {
	res, err := presenceSnapshotScript.Run(ctx, p.b.cmd, []string{p.memKey(r), p.presKey(r)}).Slice()
	if err != nil {
		return nil, "", unavailable(err)
	}
	if len(res) != 2 {
		return nil, "", fmt.Errorf("redisbroker: presence snapshot reply %v", res)
	}
	vals, _ := res[1].([]any)
	recs := make([]memberRecord, 0, len(vals))
	for _, v := range vals {
		var rec memberRecord
		if json.Unmarshal([]byte(str(v)), &rec) == nil {
			recs = append(recs, rec)
		}
	}
	return recs, str(res[0]), nil
}

// Watch returns room's members and then delivers every later join and
// leave, on any node (this one included; PresenceEvent.Node tells), to fn
// in order until cancel. fn must not block.
func (p *Presence) Watch(ctx context.Context, r string, fn func(PresenceEvent)) ([]room.Member, func(), error) {
	ms, id, err := p.snapshot(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	cancel, err := p.watchFrom(ctx, r, id, fn)
	return ms, cancel, err
}

func (p *Presence) watchFrom(ctx context.Context, r, id string, fn func(PresenceEvent)) (func(), error) {
	w := &presenceWatch{k: p.presKey(r), cursor: id, fn: fn, active: true}
	b := p.b
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("redisbroker: %w", room.ErrClosed)
	}
	rd := b.readerFor(r)
	b.mu.Unlock()
	rd.add(ctx, w)
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			w.mu.Lock()
			w.active = false
			w.mu.Unlock()
			rd.remove(w)
		})
	}
	return cancel, nil
}

// ForHub returns p as a room.Presence (room.Options.Presence): the core
// tracks its own node's members itself, so Watch reports the other nodes'
// only.
func (p *Presence) ForHub() HubPresence { return HubPresence{p} }

// HubPresence is a Presence as the room core sees it. See ForHub.
type HubPresence struct{ p *Presence }

// Join records m as a member of room r on this node.
func (h HubPresence) Join(ctx context.Context, r string, m room.Member) error {
	_, err := h.p.Join(ctx, r, m)
	return err
}

// Leave removes member sid of room r on this node.
func (h HubPresence) Leave(ctx context.Context, r, sid string) error { return h.p.Leave(ctx, r, sid) }

// Watch returns room r's members on the other nodes, then delivers their
// joins and leaves to fn until cancel.
func (h HubPresence) Watch(ctx context.Context, r string, fn func(string, room.Member)) ([]room.Member, func(), error) {
	recs, id, err := h.p.records(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	var others []room.Member
	for _, rec := range recs {
		if rec.Node != h.p.b.node {
			others = append(others, rec.Member)
		}
	}
	cancel, err := h.p.watchFrom(ctx, r, id, func(e PresenceEvent) {
		if e.Node != h.p.b.node {
			fn(e.Event, e.Member)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return others, cancel, nil
}

type presenceWatch struct {
	k  string
	fn func(PresenceEvent)

	mu     sync.Mutex
	cursor string
	active bool
}

func (w *presenceWatch) key() string { return w.k }

func (w *presenceWatch) position() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cursor, w.active
}

func (w *presenceWatch) deliver(from string, msgs []redis.XMessage) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.active || w.cursor != from {
		return
	}
	for _, m := range msgs {
		w.cursor = m.ID
		var rec memberRecord
		if json.Unmarshal([]byte(str(m.Values["m"])), &rec) != nil {
			continue
		}
		w.fn(PresenceEvent{Event: str(m.Values["ev"]), Member: rec.Member, Node: rec.Node})
	}
}

// Close stops the heartbeat and removes this node's members (best effort:
// a node that cannot reach Redis now is reaped by the others after TTL).
func (p *Presence) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.reap(ctx, p.b.node, 0, false)
}

func (p *Presence) run() {
	defer close(p.done)
	t := time.NewTicker(p.opts.Interval)
	defer t.Stop()
	for {
		p.beat()
		select {
		case <-t.C:
		case <-p.stop:
			return
		}
	}
}

// beat sends one heartbeat and reaps the nodes that missed theirs.
func (p *Presence) beat() {
	ctx, cancel := context.WithTimeout(p.b.ctx, p.opts.Interval)
	defer cancel()
	res, err := heartbeatScript.Run(ctx, p.b.cmd, []string{p.nodesKey()}, p.b.node, p.opts.TTL.Milliseconds()).Slice()
	if err != nil || len(res) != 2 {
		if p.failing == 0 {
			p.b.log.Warn("redisbroker: presence heartbeat failed", "err", err)
		}
		p.failing++
		return
	}
	p.failing = 0
	p.beats++
	if was, _ := res[0].(int64); was == 0 && p.beats > 1 {
		p.b.log.Warn("redisbroker: this node was declared dead; restoring its members")
		p.restore(ctx)
	}
	dead, _ := res[1].([]any)
	for _, d := range dead {
		if n := str(d); n != p.b.node {
			if err := p.reap(ctx, n, p.opts.TTL, true); err != nil {
				p.b.log.Warn("redisbroker: reaping a dead node", "node", n, "err", err)
			}
		}
	}
}

// reap removes node's members from every room it had members in; forget
// also unregisters the node if its last heartbeat is still older than ttl.
func (p *Presence) reap(ctx context.Context, node string, ttl time.Duration, forget bool) error {
	rooms, err := p.b.cmd.SMembers(ctx, p.roomsKey(node)).Result()
	if err != nil {
		return unavailable(err)
	}
	var errs []error
	for _, r := range rooms {
		n, err := presenceReapScript.Run(ctx, p.b.cmd, []string{p.memKey(r), p.presKey(r)}, node).Int()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n > 0 {
			p.b.log.Info("redisbroker: removed a dead node's members", "node", node, "room", r, "members", n)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if forget {
		t, err := p.b.cmd.Time(ctx).Result()
		if err != nil {
			return unavailable(err)
		}
		cut := t.Add(-ttl).UnixMilli()
		if n, err := forgetNodeScript.Run(ctx, p.b.cmd, []string{p.nodesKey()}, node, cut).Int(); err != nil || n == 0 {
			return err // it came back: keep its rooms set
		}
	} else {
		p.b.cmd.ZRem(ctx, p.nodesKey(), node)
	}
	return p.b.cmd.Del(ctx, p.roomsKey(node)).Err()
}

// restore puts this node's members back after it was declared dead.
func (p *Presence) restore(ctx context.Context) {
	p.mu.Lock()
	local := map[string][]room.Member{}
	for r, ms := range p.local {
		for _, m := range ms {
			local[r] = append(local[r], m)
		}
	}
	p.mu.Unlock()
	for r, ms := range local {
		for _, m := range ms {
			if _, err := p.Join(ctx, r, m); err != nil {
				p.b.log.Warn("redisbroker: restoring a member", "room", r, "err", err)
				return
			}
		}
	}
}
