package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/roomwire/roomwire/room"
)

// FileName is the name of the database file inside the data directory.
const FileName = "rooms.db"

// Options configures a Store. Zero fields mean the defaults.
type Options struct {
	// Log bounds each room's log on disk (count and age). Give the hub
	// the same limits. Zero fields: room.LogLimits' defaults.
	Log room.LogLimits
	// LockTimeout is how long Open waits for another process to release
	// the database file. Default 5 s.
	LockTimeout time.Duration
	// UnsafeNoSync commits without syncing the file: faster, and an
	// acknowledged entry survives a process crash but may be lost when
	// the machine crashes or loses power. Default false (sync on every
	// commit).
	UnsafeNoSync bool
}

// ErrCorrupt is returned when the database holds something this package did
// not write (or a newer format).
var ErrCorrupt = errors.New("boltstore: unexpected database content")

// commitMode is how Save commits; the benchmarks compare them.
type commitMode int

const (
	commitGroup  commitMode = iota // one committer goroutine, groups of queued saves (default)
	commitUpdate                   // one bbolt Update per Save
	commitBatch                    // bbolt's DB.Batch (groups after MaxBatchDelay)
)

// Store is a room.Store in a bbolt file. Create it with Open; Close it when
// done.
type Store struct {
	db     *bolt.DB
	limits room.LogLimits
	now    func() time.Time
	mode   commitMode

	mu     sync.Mutex
	queue  []*save
	closed bool
	wake   chan struct{} // capacity 1: "the queue is not empty"
	quit   chan struct{} // closed by Close
	done   chan struct{} // closed when the committer has exited
}

// save is one queued Save.
type save struct {
	room string
	e    *room.Entry
	rec  []byte // time + JSON entry, the log value
	doc  []byte // nil for an event
	err  chan error
}

var (
	bucketRooms = []byte("rooms")
	bucketMeta  = []byte("meta")
	bucketLog   = []byte("log")
	keyDoc      = []byte("doc")
	keyMeta     = []byte("meta")
	keyFormat   = []byte("format")
	format1     = []byte("1")
)

// Open opens (creating if needed) the store in directory dir.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 5 * time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{
		Timeout:      o.LockTimeout,
		NoSync:       o.UnsafeNoSync,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: opening %s: %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch f := meta.Get(keyFormat); {
		case f == nil:
			if err := meta.Put(keyFormat, format1); err != nil {
				return err
			}
		case string(f) != string(format1):
			return fmt.Errorf("%w: format %q", ErrCorrupt, f)
		}
		_, err = tx.CreateBucketIfNotExists(bucketRooms)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	return newStore(db, o.Log, commitGroup), nil
}

func newStore(db *bolt.DB, limits room.LogLimits, mode commitMode) *Store {
	s := &Store{
		db:     db,
		limits: limits.WithDefaults(),
		now:    time.Now,
		mode:   mode,
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.commitLoop()
	return s
}

// Close waits for queued saves to commit, then closes the database. Save
// fails with room.ErrClosed afterwards. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	close(s.quit)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}

// Load implements room.Store.
func (s *Store) Load(_ context.Context, name string) (room.State, error) {
	st := room.State{Doc: []byte("{}")}
	cut := s.now().Add(-s.limits.MaxAge).UnixMilli()
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRooms).Bucket([]byte(name))
		if rb == nil {
			return nil
		}
		var err error
		if st.Version, st.Seq, err = readMeta(rb); err != nil {
			return err
		}
		if d := rb.Get(keyDoc); d != nil {
			st.Doc = append([]byte(nil), d...)
		}
		lb := rb.Bucket(bucketLog)
		if lb == nil || st.Seq == 0 {
			return nil
		}
		first := uint64(1)
		if st.Seq > uint64(s.limits.MaxEntries) {
			first = st.Seq - uint64(s.limits.MaxEntries) + 1
		}
		c := lb.Cursor()
		for k, v := c.Seek(seqKey(first)); k != nil; k, v = c.Next() {
			if len(k) != 8 || len(v) < 8 {
				return fmt.Errorf("%w: log record of room %q", ErrCorrupt, name)
			}
			if int64(binary.BigEndian.Uint64(v)) < cut && binary.BigEndian.Uint64(k) != st.Seq {
				continue // older than the age limit; the newest always stays
			}
			e := new(room.Entry)
			if err := json.Unmarshal(v[8:], e); err != nil {
				return fmt.Errorf("%w: log entry of room %q: %v", ErrCorrupt, name, err)
			}
			st.Log = append(st.Log, e)
		}
		return nil
	})
	if err != nil {
		return room.State{}, fmt.Errorf("boltstore: loading room %q: %w", name, err)
	}
	return st, nil
}

// Save implements room.Store: it returns once e (and, for a patch, doc) has
// been committed and synced. It does not give up when ctx ends: the caller
// must learn whether e is on disk, and a commit takes as long as the disk.
func (s *Store) Save(_ context.Context, name string, e *room.Entry, doc []byte) error {
	js, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("boltstore: encoding entry: %w", err)
	}
	sv := &save{room: name, e: e, rec: binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(js)), uint64(e.Time))}
	sv.rec = append(sv.rec, js...)
	if e.Kind == room.KindPatch {
		sv.doc = doc
	}
	switch s.mode {
	case commitUpdate:
		return s.check(s.db.Update(func(tx *bolt.Tx) error { return s.put(tx, sv) }))
	case commitBatch:
		return s.check(s.db.Batch(func(tx *bolt.Tx) error { return s.put(tx, sv) }))
	}
	sv.err = make(chan error, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("boltstore: %w", room.ErrClosed)
	}
	s.queue = append(s.queue, sv)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return <-sv.err
}

func (s *Store) check(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("boltstore: %w", room.ErrClosed)
	}
	if err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	return nil
}

// commitLoop is the committer: it commits whatever is queued, one
// transaction per round, until Close; then it commits what is left.
func (s *Store) commitLoop() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
			s.commitQueued()
		case <-s.quit:
			s.commitQueued() // Close set closed first: nothing joins later
			return
		}
	}
}

func (s *Store) commitQueued() {
	s.mu.Lock()
	batch := s.queue
	s.queue = nil
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, sv := range batch {
			if err := s.put(tx, sv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		// One bad save must not fail the others: commit them one by one.
		for _, sv := range batch {
			sv.err <- s.check(s.db.Update(func(tx *bolt.Tx) error { return s.put(tx, sv) }))
		}
		return
	}
	err = s.check(err)
	for _, sv := range batch {
		sv.err <- err
	}
}

// put writes one save into tx and trims the room's log. It is idempotent
// within a transaction that is rolled back (DB.Batch may run it twice).
func (s *Store) put(tx *bolt.Tx, sv *save) error {
	rb, err := tx.Bucket(bucketRooms).CreateBucketIfNotExists([]byte(sv.room))
	if err != nil {
		return err
	}
	lb, err := rb.CreateBucketIfNotExists(bucketLog)
	if err != nil {
		return err
	}
	_, seq, err := readMeta(rb)
	if err != nil {
		return err
	}
	if sv.e.Seq != seq+1 {
		return fmt.Errorf("room %q: entry seq %d does not follow stored seq %d", sv.room, sv.e.Seq, seq)
	}
	if sv.doc != nil {
		if err := rb.Put(keyDoc, sv.doc); err != nil {
			return err
		}
	}
	var meta [16]byte
	binary.BigEndian.PutUint64(meta[:8], sv.e.Version)
	binary.BigEndian.PutUint64(meta[8:], sv.e.Seq)
	if err := rb.Put(keyMeta, meta[:]); err != nil {
		return err
	}
	if err := lb.Put(seqKey(sv.e.Seq), sv.rec); err != nil {
		return err
	}
	return s.trim(lb, sv.e.Seq)
}

// trim deletes log records over the count limit or older than the age
// limit, oldest first; the newest (seq last) always stays.
func (s *Store) trim(lb *bolt.Bucket, last uint64) error {
	cut := s.now().Add(-s.limits.MaxAge).UnixMilli()
	var drop [][]byte
	c := lb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq := binary.BigEndian.Uint64(k)
		if seq == last || (last-seq < uint64(s.limits.MaxEntries) && int64(binary.BigEndian.Uint64(v)) >= cut) {
			break
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	for _, k := range drop {
		if err := lb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func readMeta(rb *bolt.Bucket) (version, seq uint64, err error) {
	m := rb.Get(keyMeta)
	if m == nil {
		return 0, 0, nil
	}
	if len(m) != 16 {
		return 0, 0, fmt.Errorf("%w: meta of %d bytes", ErrCorrupt, len(m))
	}
	return binary.BigEndian.Uint64(m[:8]), binary.BigEndian.Uint64(m[8:]), nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }
