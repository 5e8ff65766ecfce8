package boltstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/roomwire/roomwire/room"
)

func open(t testing.TB, dir string, limits room.LogLimits) *Store {
	t.Helper()
	s, err := Open(dir, &Options{Log: limits, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func patch(seq, v uint64, key string) *room.Entry {
	return &room.Entry{Seq: seq, Version: v, Kind: room.KindPatch, From: "s1", CID: "c" + key,
		Ops: json.RawMessage(fmt.Sprintf(`[{"op":"add","path":"/%s","value":1}]`, key)), Time: time.Now().UnixMilli()}
}

func TestSaveLoadReopen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	s := open(t, dir, room.LogLimits{})
	if st, err := s.Load(ctx, "r"); err != nil || string(st.Doc) != "{}" || st.Version != 0 || st.Seq != 0 || len(st.Log) != 0 {
		t.Fatalf("new room: %+v %v", st, err)
	}
	must(t, s.Save(ctx, "r", patch(1, 1, "a"), []byte(`{"a":1}`)))
	must(t, s.Save(ctx, "r", &room.Entry{Seq: 2, Version: 1, Kind: room.KindEvent, From: "s2", Data: json.RawMessage(`"hi"`), Time: time.Now().UnixMilli()}, nil))
	must(t, s.Save(ctx, "other", patch(1, 1, "x"), []byte(`{"x":1}`)))
	// A seq that does not follow is refused and changes nothing.
	if err := s.Save(ctx, "r", patch(5, 2, "b"), []byte(`{"a":1,"b":1}`)); err == nil {
		t.Fatal("a seq gap was accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "r", patch(3, 2, "b"), []byte(`{}`)); !errors.Is(err, room.ErrClosed) {
		t.Fatalf("save after close: %v", err)
	}

	s = open(t, dir, room.LogLimits{})
	st, err := s.Load(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if string(st.Doc) != `{"a":1}` || st.Version != 1 || st.Seq != 2 || len(st.Log) != 2 {
		t.Fatalf("after reopen: doc %s v%d seq%d log %d", st.Doc, st.Version, st.Seq, len(st.Log))
	}
	if e := st.Log[0]; e.Seq != 1 || e.Kind != room.KindPatch || e.CID != "ca" || string(e.Ops) != `[{"op":"add","path":"/a","value":1}]` {
		t.Fatalf("log[0]: %+v", e)
	}
	if e := st.Log[1]; e.Seq != 2 || e.Version != 1 || e.Kind != room.KindEvent || string(e.Data) != `"hi"` || e.From != "s2" {
		t.Fatalf("log[1]: %+v", e)
	}
	if st, _ := s.Load(ctx, "other"); string(st.Doc) != `{"x":1}` || st.Seq != 1 {
		t.Fatalf("other room: %+v", st)
	}
}

func TestLockedByAnotherOpen(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, room.LogLimits{})
	if _, err := Open(dir, &Options{LockTimeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("a second Open of the same directory succeeded")
	}
}

func TestTrim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := open(t, t.TempDir(), room.LogLimits{MaxEntries: 5, MaxAge: time.Minute})
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	doc := []byte(`{}`)
	for i := uint64(1); i <= 12; i++ {
		e := patch(i, i, fmt.Sprint("k", i))
		e.Time = now.UnixMilli()
		must(t, s.Save(ctx, "r", e, doc))
	}
	st, _ := s.Load(ctx, "r")
	if len(st.Log) != 5 || st.Log[0].Seq != 8 || st.Log[4].Seq != 12 {
		t.Fatalf("count limit: %d entries from %d", len(st.Log), st.Log[0].Seq)
	}
	countRecords := func() int {
		n := 0
		s.db.View(func(tx *bolt.Tx) error {
			n = tx.Bucket(bucketRooms).Bucket([]byte("r")).Bucket(bucketLog).Stats().KeyN
			return nil
		})
		return n
	}
	if n := countRecords(); n != 5 {
		t.Fatalf("%d records on disk, want 5", n)
	}
	// Two minutes later everything is too old, but the newest stays.
	now = now.Add(2 * time.Minute)
	if st, _ := s.Load(ctx, "r"); len(st.Log) != 1 || st.Log[0].Seq != 12 {
		t.Fatalf("age limit on load: %d entries", len(st.Log))
	}
	e := patch(13, 13, "k13")
	e.Time = now.UnixMilli()
	must(t, s.Save(ctx, "r", e, doc))
	if n := countRecords(); n != 1 {
		t.Fatalf("%d records on disk after an age trim, want 1", n)
	}
}

// TestConcurrentRooms: saves for many rooms at once, through the committer,
// one bad save among them; every good one is durable, the bad one alone
// fails.
func TestConcurrentRooms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	s := open(t, dir, room.LogLimits{})
	const rooms, per = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, rooms*per)
	for r := range rooms {
		wg.Go(func() {
			name := fmt.Sprint("room", r)
			for i := uint64(1); i <= per; i++ {
				if err := s.Save(ctx, name, patch(i, i, fmt.Sprint("k", i)), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
					errs <- err
				}
				if r == 0 && i == 10 {
					if err := s.Save(ctx, name, patch(99, 99, "bad"), []byte(`{}`)); err == nil {
						errs <- errors.New("bad seq accepted")
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, room.LogLimits{})
	for r := range rooms {
		st, err := s.Load(ctx, fmt.Sprint("room", r))
		if err != nil || st.Seq != per || st.Version != per || string(st.Doc) != fmt.Sprintf(`{"n":%d}`, per) || len(st.Log) != per {
			t.Fatalf("room%d: %+v %v", r, st, err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
