package room

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Entry kinds.
const (
	KindPatch = "patch"
	KindEvent = "event"
)

// Entry is one durable room message: a patch or a published event. The
// broker assigns Seq; entries of one room form one total order.
type Entry struct {
	Seq     uint64          `json:"seq"`
	Version uint64          `json:"v"` // document version after this entry
	Kind    string          `json:"kind"`
	From    string          `json:"from"`
	CID     string          `json:"cid,omitempty"`
	Ops     json.RawMessage `json:"ops,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Time    int64           `json:"time"` // unix milliseconds, set by the broker

	// Doc is the document after a patch, when the broker has it at hand;
	// nil means subscribers apply Ops themselves. Not sent on the wire.
	Doc []byte `json:"-"`
}

// State is a room's document, its version and its last room seq, plus the
// tail of its log (oldest first), as of one point in the room's order.
type State struct {
	Doc     []byte
	Version uint64
	Seq     uint64
	Log     []*Entry
}

// Broker orders and fans out a room's durable messages. It is the single
// writer of a room's seq, version and log: a multi-node implementation
// (Redis) makes Append an atomic compare-and-set so that two nodes can never
// fork a room.
//
// Implementations must be safe for concurrent use.
type Broker interface {
	// Subscribe starts delivering room's entries to fn and returns the
	// room's state at the point where delivery starts: every entry with a
	// larger seq reaches fn, in seq order, with no gap and no duplicate.
	// fn is never called concurrently for one subscription; it must not
	// block and must not call back into the broker. cancel stops delivery
	// and is idempotent.
	Subscribe(ctx context.Context, room string, fn func(*Entry)) (st State, cancel func(), err error)
	// Append assigns e the room's next seq and appends it to the log. For
	// a patch, e.Version must be the current version plus one, else
	// ErrVersionConflict and nothing changes; doc is then the new
	// document. For an event, the broker sets e.Version to the current
	// version. Append returns once e is durable and ordered; delivery to
	// subscribers may happen before or after it returns. A broker that
	// remembers client message ids itself (across nodes) may return
	// ErrDuplicate for a cid it committed before, after delivering the
	// original entry to this node's subscribers.
	Append(ctx context.Context, room string, e *Entry, doc []byte) error
}

// Presence shares rooms' member lists between the nodes of a cluster. Set
// Options.Presence to use one; without it each hub's presence is its own.
// The hub calls Join and Leave outside its locks, and for one session and
// room never concurrently, so that the last call made agrees with whether
// the session is a member now.
//
// Implementations must be safe for concurrent use.
type Presence interface {
	// Join records m as a member of room on this node. It is idempotent.
	Join(ctx context.Context, room string, m Member) error
	// Leave removes member sid of room on this node. It is idempotent.
	Leave(ctx context.Context, room, sid string) error
	// Watch returns room's members on the other nodes and then delivers
	// their joins and leaves ("join", "leave") to fn, in order, until
	// cancel; every event after the returned list reaches fn. fn is never
	// called concurrently for one watch; it must not block and must not
	// call back into the Presence. cancel is idempotent.
	Watch(ctx context.Context, room string, fn func(event string, m Member)) (others []Member, cancel func(), err error)
}

// LogLimits bounds a room log. Zero fields mean the defaults.
type LogLimits struct {
	MaxEntries int           // default 1000
	MaxAge     time.Duration // default 10 minutes
}

// WithDefaults returns l with zero fields replaced by the defaults.
func (l LogLimits) WithDefaults() LogLimits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = 1000
	}
	if l.MaxAge <= 0 {
		l.MaxAge = 10 * time.Minute
	}
	return l
}

// trimLog drops the entries over the count or older than the age limit
// (time gives an entry's unix milliseconds). The newest is always kept.
func trimLog[T any](log []T, l LogLimits, now time.Time, time func(T) int64) []T {
	var zero T
	if n := len(log) - l.MaxEntries; n > 0 {
		clear(log[:n])
		log = log[n:]
	}
	cut := now.Add(-l.MaxAge).UnixMilli()
	i := 0
	for i < len(log)-1 && time(log[i]) < cut {
		log[i] = zero
		i++
	}
	return log[i:]
}

func entryTime(e *Entry) int64 { return e.Time }

// Store keeps rooms' documents, versions and logs for a MemoryBroker: the
// broker orders, the store remembers. MemoryStore keeps them in memory; an
// embedded store keeps them on disk so that a restart loses nothing that
// was acknowledged.
//
// A MemoryBroker calls a store's methods for one room under that room's
// lock, so one room's calls never overlap; calls for different rooms may.
type Store interface {
	// Load returns room's document ("{}" for a new room), version, last
	// seq and the tail of its log, oldest first.
	Load(ctx context.Context, room string) (State, error)
	// Save records e, whose Seq and Time are set, and for a patch doc as
	// the room's document. It returns once both are durable: the broker
	// acknowledges nothing before.
	Save(ctx context.Context, room string, e *Entry, doc []byte) error
}

// MemoryStore is a Store in memory: rooms live until the process ends.
type MemoryStore struct {
	limits LogLimits
	now    func() time.Time

	mu    sync.Mutex
	rooms map[string]*State
}

// NewMemoryStore returns an empty store whose logs keep limits.
func NewMemoryStore(limits LogLimits) *MemoryStore {
	return &MemoryStore{limits: limits.WithDefaults(), now: time.Now, rooms: map[string]*State{}}
}

// Load implements Store.
func (s *MemoryStore) Load(_ context.Context, room string) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.rooms[room]
	if st == nil {
		return State{Doc: []byte("{}")}, nil
	}
	st.Log = trimLog(st.Log, s.limits, s.now(), entryTime)
	out := *st
	out.Log = append([]*Entry(nil), st.Log...)
	return out, nil
}

// Save implements Store.
func (s *MemoryStore) Save(_ context.Context, room string, e *Entry, doc []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.rooms[room]
	if st == nil {
		st = &State{Doc: []byte("{}")}
		s.rooms[room] = st
	}
	if e.Kind == KindPatch {
		st.Doc = doc
	}
	st.Version, st.Seq = e.Version, e.Seq
	st.Log = trimLog(append(st.Log, e), s.limits, s.now(), entryTime)
	return nil
}

// MemoryBroker is the single-process Broker: it orders each room's entries
// under a mutex and delivers them to subscribers before Append returns. What
// it orders is kept by its Store. Its zero value is not usable; call
// NewMemoryBroker.
type MemoryBroker struct {
	store Store
	now   func() time.Time

	mu    sync.Mutex
	rooms map[string]*memRoom
}

type memRoom struct {
	mu      sync.Mutex
	loaded  bool
	version uint64
	seq     uint64
	subs    map[int]func(*Entry)
	nextSub int
}

// NewMemoryBroker returns a broker over store (nil: a new MemoryStore with
// the default log limits).
func NewMemoryBroker(store Store) *MemoryBroker {
	if store == nil {
		store = NewMemoryStore(LogLimits{})
	}
	return &MemoryBroker{store: store, now: time.Now, rooms: map[string]*memRoom{}}
}

// room returns name's state, loading its version and seq on first use.
// It returns with r.mu held.
func (b *MemoryBroker) room(ctx context.Context, name string) (*memRoom, *State, error) {
	b.mu.Lock()
	r := b.rooms[name]
	if r == nil {
		r = &memRoom{subs: map[int]func(*Entry){}}
		b.rooms[name] = r
	}
	b.mu.Unlock()
	r.mu.Lock()
	if r.loaded {
		return r, nil, nil
	}
	st, err := b.store.Load(ctx, name)
	if err != nil {
		r.mu.Unlock()
		return nil, nil, err
	}
	r.loaded, r.version, r.seq = true, st.Version, st.Seq
	return r, &st, nil
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(ctx context.Context, room string, fn func(*Entry)) (State, func(), error) {
	r, st, err := b.room(ctx, room)
	if err != nil {
		return State{}, nil, err
	}
	defer r.mu.Unlock()
	if st == nil {
		loaded, err := b.store.Load(ctx, room)
		if err != nil {
			return State{}, nil, err
		}
		st = &loaded
	}
	id := r.nextSub
	r.nextSub++
	r.subs[id] = fn
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.subs, id)
			r.mu.Unlock()
		})
	}
	return *st, cancel, nil
}

// Append implements Broker. Subscribers are called before it returns.
func (b *MemoryBroker) Append(ctx context.Context, room string, e *Entry, doc []byte) error {
	r, _, err := b.room(ctx, room)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	if e.Kind == KindPatch {
		if e.Version != r.version+1 {
			return ErrVersionConflict
		}
		e.Doc = doc
	} else {
		e.Version = r.version
	}
	e.Seq = r.seq + 1
	e.Time = b.now().UnixMilli()
	if err := b.store.Save(ctx, room, e, doc); err != nil {
		return err
	}
	r.version, r.seq = e.Version, e.Seq
	for _, fn := range r.subs {
		fn(e)
	}
	return nil
}
