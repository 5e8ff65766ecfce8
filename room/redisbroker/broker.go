package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomwire/roomwire/room"
)

// Options configures a Broker. Zero fields mean the defaults.
type Options struct {
	// Redis says how to reach the server (address, password, TLS,
	// timeouts). Required. The broker opens its own clients with it and
	// closes them in Close; MaxRetries is forced to -1 for appends (a
	// retried append is the client's decision, by cid).
	Redis *redis.Options
	// Prefix begins every key. Default "rw".
	Prefix string
	// Log bounds the log tail Subscribe returns, and the room streams
	// (see StreamMaxLen). Give the hub the same limits.
	Log room.LogLimits
	// StreamMaxLen bounds each room stream (approximately: XADD MAXLEN
	// ~). A node whose reader falls this far behind a room loses
	// continuity for it (see ErrStateLost). Default max(2*Log.MaxEntries,
	// 1000). Entries older than Log.MaxAge are trimmed too (MINID ~).
	StreamMaxLen int
	// Readers is how many reader goroutines share this node's subscribed
	// rooms, each with one XREAD BLOCK over its rooms' streams and one
	// Redis connection. Default 1.
	Readers int
	// ReaderPerRoom gives every subscribed room a reader goroutine and a
	// Redis connection of its own instead (Readers is then ignored).
	ReaderPerRoom bool
	// ConflictWait bounds how long Append waits for this node's
	// subscription to deliver the entry it committed (or, having lost a
	// version race, the winning one) before it returns. Default 5 s.
	ConflictWait time.Duration
	// Node names this node in its Redis keys. Default: random.
	Node string
	// Logger receives operational events. Default: discard.
	Logger *slog.Logger
}

// Errors. Both wrap into the error a Room sends its client, which then has
// the wire code "internal": retry with the same cid.
var (
	// ErrUnavailable wraps a failure to reach Redis. An Append that
	// fails with it may or may not have been committed; a retry with the
	// same cid is applied once.
	ErrUnavailable = errors.New("redisbroker: redis unavailable")
	// ErrStateLost: the room's state in Redis is not the one this node
	// has been following (Redis lost its data, or this node fell behind
	// the stream's trim). The node stops delivering the room and refuses
	// appends to it until it is subscribed afresh.
	ErrStateLost = errors.New("redisbroker: room state lost in redis")
)

// blockTimeout bounds one XREAD BLOCK: a reader re-issues its read at least
// this often, and go-redis gives a blocked read this plus 10 s before it
// declares the connection dead.
const blockTimeout = 5 * time.Second

// Broker is a room.Broker over Redis, for any number of nodes. Create it
// with New; Close it after the hub has shut down.
type Broker struct {
	opts   Options
	prefix string
	node   string
	cmd    *redis.Client // scripts and doorbells
	rd     *redis.Client // readers' blocking XREADs
	log    *slog.Logger
	ctx    context.Context // cancelled by Close
	stop   context.CancelFunc
	wg     sync.WaitGroup // readers

	mu      sync.Mutex
	rooms   map[string]*roomSub
	shared  []*reader
	perRoom int // readers started for ReaderPerRoom, for bell names
	closed  bool
}

// roomSub is this node's subscription to one room's stream, shared by every
// Subscribe of the room on this node.
type roomSub struct {
	b    *Broker
	name string
	k    keys
	refs int     // Subscribes under way or not cancelled; guarded by Broker.mu
	rd   *reader // guarded by Broker.mu

	init sync.Mutex // serialises Subscribe's snapshots of this room

	// Guarded by mu; delivery holds mu while it calls subscribers. Lock
	// order: Broker.mu, then reader.mu, then mu, then (in a subscriber)
	// the Room's own; nothing else is taken while mu is held.
	mu       sync.Mutex
	active   bool   // the reader reads the stream from cursor
	lost     bool   // continuity lost: no delivery, no appends
	cursor   string // stream id of the last entry delivered
	lastSeq  uint64
	epoch    string
	subs     map[int]*sub
	nextID   int
	progress chan struct{} // closed and replaced when lastSeq moves
}

type sub struct {
	fn      func(*room.Entry)
	start   uint64 // deliver entries after this seq
	pending bool   // Subscribe has not finished: buffer
	buf     []*room.Entry
}

type keys struct{ st, log, cid string }

// New returns a broker for opts. It does not contact Redis: the first
// Subscribe or Append does.
func New(opts *Options) (*Broker, error) {
	if opts == nil || opts.Redis == nil {
		return nil, errors.New("redisbroker: Options.Redis is required")
	}
	o := *opts
	o.Log = o.Log.WithDefaults()
	if o.Prefix == "" {
		o.Prefix = "rw"
	}
	if o.StreamMaxLen <= 0 {
		o.StreamMaxLen = max(2*o.Log.MaxEntries, 1000)
	}
	if o.Readers <= 0 {
		o.Readers = 1
	}
	if o.ConflictWait <= 0 {
		o.ConflictWait = 5 * time.Second
	}
	if o.Node == "" {
		o.Node = randomID(9)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	co := *o.Redis
	co.MaxRetries = -1
	ro := *o.Redis
	ro.MaxRetries = -1
	ro.PoolSize = o.Readers
	if o.ReaderPerRoom {
		ro.PoolSize = 1 << 16 // one connection per subscribed room; Redis's maxclients is the limit
	}
	ctx, stop := context.WithCancel(context.Background())
	b := &Broker{
		opts:   o,
		prefix: o.Prefix,
		node:   o.Node,
		cmd:    redis.NewClient(&co),
		rd:     redis.NewClient(&ro),
		log:    o.Logger,
		ctx:    ctx,
		stop:   stop,
		rooms:  map[string]*roomSub{},
	}
	if !o.ReaderPerRoom {
		for i := range o.Readers {
			b.shared = append(b.shared, b.startReader(fmt.Sprintf("%s:bell:%s:%d", b.prefix, b.node, i)))
		}
	}
	return b, nil
}

// Client returns the Redis client the broker uses for commands, for
// components that share its connection (see Presence).
func (b *Broker) Client() *redis.Client { return b.cmd }

// Node returns this node's name.
func (b *Broker) Node() string { return b.node }

// Close stops every reader and closes the Redis clients. Subscriptions end
// without notice: shut the hub down first. Close is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.stop()
	// Closing the readers' client breaks their blocked reads.
	err := b.rd.Close()
	b.wg.Wait()
	return errors.Join(err, b.cmd.Close())
}

func (b *Broker) keys(name string) keys {
	p := b.prefix + ":{" + name + "}:"
	return keys{st: p + "st", log: p + "log", cid: p + "cid"}
}

// acquire returns name's roomSub with one more reference.
func (b *Broker) acquire(name string) (*roomSub, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("redisbroker: %w", room.ErrClosed)
	}
	rs := b.rooms[name]
	if rs == nil {
		rs = &roomSub{b: b, name: name, k: b.keys(name), subs: map[int]*sub{}, progress: make(chan struct{})}
		b.rooms[name] = rs
	}
	rs.refs++
	return rs, nil
}

// release drops a reference; the last one removes the room from its reader.
func (b *Broker) release(rs *roomSub) {
	b.mu.Lock()
	rs.refs--
	if rs.refs > 0 {
		b.mu.Unlock()
		return
	}
	delete(b.rooms, rs.name)
	rs.mu.Lock()
	rs.active = false
	rs.signal()
	rs.mu.Unlock()
	rd := rs.rd
	rs.rd = nil
	b.mu.Unlock()
	if rd != nil {
		rd.remove(rs)
	}
}

// snapshot is a room's state at one point of its stream.
type snapshot struct {
	st     room.State
	epoch  string
	lastID string
}

func (b *Broker) snapshot(ctx context.Context, k keys) (snapshot, error) {
	res, err := snapshotScript.Run(ctx, b.cmd, []string{k.st, k.log}, randomID(12), b.opts.Log.MaxEntries).Slice()
	if err != nil {
		return snapshot{}, unavailable(err)
	}
	if len(res) != 7 {
		return snapshot{}, fmt.Errorf("redisbroker: snapshot reply of %d elements", len(res))
	}
	var s snapshot
	doc, _ := res[0].(string)
	s.st.Doc = []byte(doc)
	s.st.Version, _ = strconv.ParseUint(str(res[1]), 10, 64)
	s.st.Seq, _ = strconv.ParseUint(str(res[2]), 10, 64)
	s.epoch, s.lastID = str(res[3]), str(res[4])
	now, _ := res[5].(int64)
	tail, _ := res[6].([]any)
	cut := now - b.opts.Log.MaxAge.Milliseconds()
	for i := len(tail) - 1; i >= 0; i-- {
		kv, _ := tail[i].([]any)
		if len(kv) != 2 {
			continue
		}
		fields, _ := kv[1].([]any)
		vals := make(map[string]any, len(fields)/2)
		for j := 0; j+1 < len(fields); j += 2 {
			vals[str(fields[j])] = fields[j+1]
		}
		e, _, err := parseEntry(vals)
		if err != nil {
			return snapshot{}, err
		}
		if e.Time < cut && e.Seq != s.st.Seq {
			continue // the newest always stays, as in a room's own log
		}
		s.st.Log = append(s.st.Log, e)
	}
	return s, nil
}

// Subscribe implements room.Broker. The state it returns and the point
// where delivery starts come from one script run, so nothing falls between.
func (b *Broker) Subscribe(ctx context.Context, name string, fn func(*room.Entry)) (room.State, func(), error) {
	rs, err := b.acquire(name)
	if err != nil {
		return room.State{}, nil, err
	}
	rs.init.Lock()
	st, id, err := b.subscribe(ctx, rs, fn)
	rs.init.Unlock()
	if err != nil {
		b.release(rs)
		return room.State{}, nil, err
	}
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			rs.mu.Lock()
			delete(rs.subs, id)
			rs.mu.Unlock()
			b.release(rs)
		})
	}
	return st, cancel, nil
}

func (b *Broker) subscribe(ctx context.Context, rs *roomSub, fn func(*room.Entry)) (room.State, int, error) {
	// If the stream is already being read, register first (buffering),
	// then take the snapshot: whatever the reader delivers from then on
	// is at or after the snapshot's point, so the buffer plus the live
	// stream cover every later entry.
	rs.mu.Lock()
	following := rs.active && !rs.lost
	var s *sub
	var id int
	if following {
		s = &sub{fn: fn, pending: true}
		id = rs.add(s)
	}
	rs.mu.Unlock()
	snap, err := b.snapshot(ctx, rs.k)
	rs.mu.Lock()
	if err != nil {
		if s != nil {
			delete(rs.subs, id)
		}
		rs.mu.Unlock()
		return room.State{}, 0, err
	}
	if following && snap.epoch == rs.epoch && rs.active && !rs.lost {
		s.start, s.pending = snap.st.Seq, false
		for _, e := range s.buf {
			if e.Seq > s.start {
				fn(e)
			}
		}
		s.buf = nil
		rs.mu.Unlock()
		return snap.st, id, nil
	}
	if s != nil {
		delete(rs.subs, id)
	}
	// Start (or restart) following the stream from the snapshot's point.
	// Subscribers of an earlier epoch stay, without delivery.
	rs.active, rs.lost = true, false
	rs.cursor, rs.lastSeq, rs.epoch = snap.lastID, snap.st.Seq, snap.epoch
	for _, old := range rs.subs {
		old.pending, old.start, old.buf = false, ^uint64(0), nil
	}
	id = rs.add(&sub{fn: fn, start: snap.st.Seq})
	rs.signal()
	rs.mu.Unlock()

	b.mu.Lock()
	rd := rs.rd
	if rd == nil && !b.closed {
		rd = b.readerFor(rs.name)
		rs.rd = rd
	}
	b.mu.Unlock()
	if rd == nil {
		rs.mu.Lock()
		delete(rs.subs, id)
		rs.mu.Unlock()
		return room.State{}, 0, fmt.Errorf("redisbroker: %w", room.ErrClosed)
	}
	rd.add(ctx, rs)
	return snap.st, id, nil
}

func (rs *roomSub) delivered() uint64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.lastSeq
}

func (rs *roomSub) add(s *sub) int {
	id := rs.nextID
	rs.nextID++
	rs.subs[id] = s
	return id
}

// signal wakes Appends waiting for progress. Called with mu held.
func (rs *roomSub) signal() {
	close(rs.progress)
	rs.progress = make(chan struct{})
}

// readerFor picks (or starts) the reader for a stream of room name. Called
// with b.mu held and b not closed.
func (b *Broker) readerFor(name string) *reader {
	if b.opts.ReaderPerRoom {
		b.perRoom++
		return b.startReader(fmt.Sprintf("%s:{%s}:bell:%s:%d", b.prefix, name, b.node, b.perRoom))
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return b.shared[int(h.Sum32()%uint32(len(b.shared)))]
}

// Append implements room.Broker: one script run commits e. The entry
// reaches subscribers, this node's included, through the stream; when this
// node is subscribed to the room, Append returns after its subscribers have
// had the entry (or after ConflictWait, if delivery lags), so a Room's reply
// and its client-id index are in place when the session's next message is
// handled, as with a MemoryBroker. What "committed" means for durability is
// Redis's persistence setting. An append whose cid Redis committed before
// returns nil: the original entry's delivery carries the reply.
func (b *Broker) Append(ctx context.Context, name string, e *room.Entry, doc []byte) error {
	epoch := ""
	b.mu.Lock()
	rs := b.rooms[name]
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return fmt.Errorf("redisbroker: %w", room.ErrClosed)
	}
	if rs != nil {
		rs.mu.Lock()
		if rs.lost {
			rs.mu.Unlock()
			return fmt.Errorf("room %q: %w", name, ErrStateLost)
		}
		if rs.active {
			epoch = rs.epoch
		}
		rs.mu.Unlock()
	}
	k := b.keys(name)
	if e.Kind != room.KindPatch {
		doc = nil
	}
	res, err := appendScript.Run(ctx, b.cmd, []string{k.st, k.log, k.cid},
		e.Kind, e.Version, string(doc), e.From, e.CID, string(e.Ops), string(e.Data),
		epoch, randomID(12), b.opts.StreamMaxLen, b.opts.Log.MaxAge.Milliseconds(), max(b.opts.Log.MaxEntries, 1024),
	).Slice()
	if err != nil {
		return unavailable(err)
	}
	code, _ := res[0].(int64)
	switch code {
	case statusOK:
		if len(res) == 5 {
			e.Seq, e.Version, e.Time = u64(res[1]), u64(res[2]), int64(u64(res[3]))
			if rs != nil {
				b.awaitSeq(ctx, rs, e.Seq)
			}
		}
		return nil
	case statusDup:
		if len(res) == 2 && rs != nil {
			b.awaitSeq(ctx, rs, u64(res[1]))
		}
		return room.ErrDuplicate
	case statusConflict:
		if len(res) == 3 && rs != nil {
			b.awaitSeq(ctx, rs, u64(res[2]))
		}
		return room.ErrVersionConflict
	case statusLost:
		if rs != nil {
			b.markLost(rs, "append: the room's epoch changed in redis")
		}
		return fmt.Errorf("room %q: %w", name, ErrStateLost)
	}
	return fmt.Errorf("redisbroker: unexpected append reply %v", res)
}

// awaitSeq waits until rs has delivered seq, or ConflictWait passes, or ctx
// ends: a Room retrying a patch then computes it against the replica that
// includes the winner, and a committed entry's reply has been sent.
func (b *Broker) awaitSeq(ctx context.Context, rs *roomSub, seq uint64) {
	var timeout <-chan time.Time
	for {
		rs.mu.Lock()
		done := !rs.active || rs.lost || rs.lastSeq >= seq
		wait := rs.progress
		rs.mu.Unlock()
		if done {
			return
		}
		if timeout == nil {
			t := time.NewTimer(b.opts.ConflictWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wait:
		case <-timeout:
			b.log.Warn("redisbroker: delivery lags", "room", rs.name, "want", seq, "have", rs.delivered(), "waited", b.opts.ConflictWait)
			return
		case <-ctx.Done():
			return
		case <-b.ctx.Done():
			return
		}
	}
}

// markLost stops delivery of rs and refuses appends to it: what this node
// follows is no longer the room Redis has.
func (b *Broker) markLost(rs *roomSub, why string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	b.lostLocked(rs, why)
}

func (b *Broker) lostLocked(rs *roomSub, why string) {
	if rs.lost || !rs.active {
		return
	}
	rs.lost = true
	rs.signal()
	b.log.Error("redisbroker: room continuity lost; delivery stopped until it is subscribed afresh",
		"room", rs.name, "seq", rs.lastSeq, "why", why)
}

func (rs *roomSub) key() string { return rs.k.log }

func (rs *roomSub) position() (string, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.cursor, rs.active && !rs.lost
}

// deliver hands the messages read from rs's stream, read from cursor from,
// to rs's subscribers in order.
func (rs *roomSub) deliver(from string, msgs []redis.XMessage) {
	b := rs.b
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.active || rs.lost || rs.cursor != from {
		return // cancelled or restarted while the read was under way
	}
	start := rs.lastSeq
	defer func() {
		if rs.lastSeq != start && !rs.lost {
			rs.signal()
		}
	}()
	for _, m := range msgs {
		e, epoch, err := parseEntry(m.Values)
		if err != nil {
			b.lostLocked(rs, fmt.Sprintf("undecodable stream entry %s: %v", m.ID, err))
			return
		}
		if epoch != rs.epoch || e.Seq > rs.lastSeq+1 {
			b.lostLocked(rs, fmt.Sprintf("stream entry seq %d (epoch %s) after seq %d (epoch %s)", e.Seq, epoch, rs.lastSeq, rs.epoch))
			return
		}
		rs.cursor = m.ID
		if e.Seq <= rs.lastSeq {
			continue
		}
		rs.lastSeq = e.Seq
		for _, s := range rs.subs {
			switch {
			case s.pending:
				s.buf = append(s.buf, e)
			case e.Seq > s.start:
				s.fn(e)
			}
		}
	}
}

// parseEntry decodes a stream entry's fields.
func parseEntry(v map[string]any) (*room.Entry, string, error) {
	var err error
	num := func(k string) uint64 {
		n, e := strconv.ParseUint(str(v[k]), 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("redisbroker: stream entry field %q: %v", k, e)
		}
		return n
	}
	e := &room.Entry{Seq: num("s"), Version: num("v"), Time: int64(num("t")), Kind: str(v["k"]), From: str(v["f"]), CID: str(v["c"])}
	if o := str(v["o"]); o != "" {
		e.Ops = json.RawMessage(o)
	}
	if d := str(v["d"]); d != "" {
		e.Data = json.RawMessage(d)
	}
	if err == nil && e.Seq == 0 {
		err = errors.New("redisbroker: stream entry without seq")
	}
	return e, str(v["ep"]), err
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case []byte:
		return string(x)
	}
	return ""
}

func u64(v any) uint64 {
	switch x := v.(type) {
	case int64:
		return uint64(x)
	case string:
		n, _ := strconv.ParseUint(x, 10, 64)
		return n
	}
	return 0
}

// unavailable wraps a Redis client error. Replies from a server that is up
// (script errors) are not "unavailable".
func unavailable(err error) error {
	var re redis.Error
	if errors.As(err, &re) && !isLoading(re) {
		return fmt.Errorf("redisbroker: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func isLoading(err redis.Error) bool {
	s := err.Error()
	return len(s) >= 7 && (s[:7] == "LOADING" || s[:7] == "BUSY Re")
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
