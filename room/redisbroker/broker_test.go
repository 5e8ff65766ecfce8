package redisbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/redisbroker"
)

type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// collector records delivered entries and lets a test wait for a seq.
type collector struct {
	ch chan *room.Entry
}

func newCollector() *collector { return &collector{ch: make(chan *room.Entry, 10000)} }

func (c *collector) fn(e *room.Entry) { c.ch <- e }

func (c *collector) next(ctx context.Context, t *testing.T) *room.Entry {
	t.Helper()
	select {
	case e := <-c.ch:
		return e
	case <-ctx.Done():
		t.Fatalf("waiting for an entry: %v", ctx.Err())
		return nil
	}
}

func TestAppendSubscribe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, nil)
	b1 := newBroker(t, srv, redisbroker.Options{Logger: testLogger(t)})
	b2 := newBroker(t, srv, redisbroker.Options{Logger: testLogger(t)})

	c1 := newCollector()
	st, cancel1, err := b1.Subscribe(ctx, "r", c1.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel1()
	if string(st.Doc) != "{}" || st.Seq != 0 || st.Version != 0 || len(st.Log) != 0 {
		t.Fatalf("new room: %+v", st)
	}
	big := strings.Repeat("x", 100_000)
	doc := []byte(`{"big":"` + big + `"}`)
	e := &room.Entry{Kind: room.KindPatch, Version: 1, From: "s1", CID: "c1", Ops: json.RawMessage(`[{"op":"add","path":"/big","value":"` + big + `"}]`)}
	if err := b2.Append(ctx, "r", e, doc); err != nil {
		t.Fatal(err)
	}
	if e.Seq != 1 || e.Version != 1 || e.Time == 0 {
		t.Fatalf("append set %+v", e)
	}
	got := c1.next(ctx, t)
	if got.Seq != 1 || got.Version != 1 || got.Kind != room.KindPatch || got.CID != "c1" || got.From != "s1" || string(got.Ops) != string(e.Ops) {
		t.Fatalf("delivered %+v", got)
	}
	// A stale version conflicts; the same cid again is a duplicate.
	if err := b2.Append(ctx, "r", &room.Entry{Kind: room.KindPatch, Version: 1, Ops: json.RawMessage(`[]`)}, []byte(`{}`)); err != room.ErrVersionConflict {
		t.Fatalf("stale version: %v", err)
	}
	if err := b2.Append(ctx, "r", &room.Entry{Kind: room.KindPatch, Version: 2, CID: "c1", Ops: json.RawMessage(`[]`)}, []byte(`{}`)); !errors.Is(err, room.ErrDuplicate) {
		t.Fatalf("duplicate cid: %v, want room.ErrDuplicate", err)
	}
	ev := &room.Entry{Kind: room.KindEvent, From: "s2", Data: json.RawMessage(`{"n":1}`)}
	if err := b1.Append(ctx, "r", ev, nil); err != nil {
		t.Fatal(err)
	}
	if got := c1.next(ctx, t); got.Seq != 2 || got.Version != 1 || string(got.Data) != `{"n":1}` {
		t.Fatalf("event delivered as %+v", got)
	}
	// A second node's subscription sees the state and the log.
	c2 := newCollector()
	st, cancel2, err := b2.Subscribe(ctx, "r", c2.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	if string(st.Doc) != string(doc) || st.Seq != 2 || st.Version != 1 || len(st.Log) != 2 || st.Log[0].Seq != 1 || st.Log[1].Seq != 2 {
		t.Fatalf("second subscriber: seq %d v %d log %d", st.Seq, st.Version, len(st.Log))
	}
	select {
	case e := <-c1.ch:
		t.Fatalf("unexpected delivery %+v", e)
	default:
	}
}
