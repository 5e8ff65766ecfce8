package redisbroker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/redisbroker"
)

func TestPresenceAcrossNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, nil)
	ba := newBroker(t, srv, redisbroker.Options{Node: "A", Logger: testLogger(t)})
	bb := newBroker(t, srv, redisbroker.Options{Node: "B", Logger: testLogger(t)})
	opts := &redisbroker.PresenceOptions{TTL: 600 * time.Millisecond, Interval: 200 * time.Millisecond}
	pa := redisbroker.NewPresence(ba, opts)
	defer pa.Close()
	pb := redisbroker.NewPresence(bb, opts)
	defer pb.Close()

	m1 := room.Member{SID: "s1", User: json.RawMessage(`{"name":"one"}`), Transport: "ws"}
	if ms, err := pa.Join(ctx, "r", m1); err != nil || len(ms) != 1 || ms[0].SID != "s1" {
		t.Fatalf("join: %v %v", ms, err)
	}
	events := make(chan redisbroker.PresenceEvent, 100)
	ms, stop, err := pb.Watch(ctx, "r", func(e redisbroker.PresenceEvent) { events <- e })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if len(ms) != 1 || ms[0].SID != "s1" || string(ms[0].User) != `{"name":"one"}` {
		t.Fatalf("watch members: %+v", ms)
	}
	next := func(what string) redisbroker.PresenceEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
			return redisbroker.PresenceEvent{}
		}
	}
	ms, err = pb.Join(ctx, "r", room.Member{SID: "s2", Transport: "sse"})
	if err != nil || len(ms) != 2 {
		t.Fatalf("second join: %v %v", ms, err)
	}
	if e := next("join of s2"); e.Event != "join" || e.Member.SID != "s2" || e.Node != "B" {
		t.Fatalf("event %+v", e)
	}
	if err := pa.Leave(ctx, "r", "s1"); err != nil {
		t.Fatal(err)
	}
	if e := next("leave of s1"); e.Event != "leave" || e.Member.SID != "s1" || e.Node != "A" {
		t.Fatalf("event %+v", e)
	}
	if err := pa.Leave(ctx, "r", "s1"); err != nil { // a second leave is a no-op
		t.Fatal(err)
	}

	// Node A stops reaching Redis (as if it crashed) with a member in the
	// room: B removes that member once A's heartbeat is TTL old.
	if _, err := pa.Join(ctx, "r", room.Member{SID: "s3"}); err != nil {
		t.Fatal(err)
	}
	if e := next("join of s3"); e.Member.SID != "s3" {
		t.Fatalf("event %+v", e)
	}
	crashed := time.Now()
	ba.Close()
	if e := next("leave of s3"); e.Event != "leave" || e.Member.SID != "s3" || e.Node != "A" {
		t.Fatalf("event %+v", e)
	}
	took := time.Since(crashed)
	t.Logf("a dead node's member left after %v (bound: TTL %v + interval %v)", took, opts.TTL, opts.Interval)
	if took > opts.TTL+2*opts.Interval+time.Second {
		t.Errorf("took %v", took)
	}
	ms, err = pb.Members(ctx, "r")
	if err != nil || len(ms) != 1 || ms[0].SID != "s2" {
		t.Fatalf("members after the reap: %+v %v", ms, err)
	}
	select {
	case e := <-events:
		t.Fatalf("unexpected event %+v", e)
	default:
	}
	// B's own clean close removes its member too.
	pb.Close()
	pc := redisbroker.NewPresence(newBroker(t, srv, redisbroker.Options{}), nil)
	defer pc.Close()
	if ms, _ := pc.Members(ctx, "r"); len(ms) != 0 {
		t.Fatalf("members after B closed: %+v", ms)
	}
}
