package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
)

// publishes returns the data of the EventPublish events in evs, in order,
// and checks that their seqs increase.
func publishes(t *testing.T, who string, evs []client.Event) []string {
	t.Helper()
	var out []string
	var last uint64
	for _, ev := range evs {
		if ev.Kind != client.EventPublish {
			continue
		}
		if ev.Seq <= last {
			t.Errorf("%s: event seq %d after %d", who, ev.Seq, last)
		}
		last = ev.Seq
		out = append(out, string(ev.Data))
	}
	return out
}

func seqStrings(prefix string, from, to int) []string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, fmt.Sprintf(`"%s%d"`, prefix, i))
	}
	return s
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// converged checks that every room's confirmed document and local view
// equal the server's.
func converged(ctx context.Context, t *testing.T, srv *server, name string, rooms ...*client.Room) {
	t.Helper()
	for _, r := range rooms {
		if err := r.Settle(ctx); err != nil {
			t.Fatalf("settle: %v", err)
		}
	}
	doc, version, seq, ok := srv.hub.Snapshot(name)
	if !ok {
		t.Fatalf("room %s gone from the hub", name)
	}
	for i, r := range rooms {
		if err := r.WaitSeq(ctx, seq); err != nil {
			t.Fatalf("room %d: wait for seq %d: %v", i, seq, err)
		}
		conf, v, s := r.Confirmed()
		local, _ := r.Doc()
		if !bytes.Equal(conf, doc) || !bytes.Equal(local, doc) || v != version || s != seq {
			t.Errorf("room %d: confirmed v%d seq %d %s, local %s; server v%d seq %d %s", i, v, s, conf, local, version, seq, doc)
		}
	}
}

// TestResumeAfterCut: a's TCP connection is cut (after it sent messages
// whose oks were still on the way) and it stays offline for a while. It
// resumes its session: the durable messages it missed arrive exactly once,
// in order; the messages it sent before the cut and those it queued while
// offline are each applied exactly once.
func TestResumeAfterCut(t *testing.T) { eachTransport(t, testResumeAfterCut) }

func testResumeAfterCut(t *testing.T, tr string) {
	ctx := deadline(t, 30*time.Second)
	srv := newServer(t, nil, &transport.Options{ResumeWindow: 30 * time.Second})
	px := newProxy(t, srv.addr())
	a := dial(ctx, t, px.url(), forced("a", tr))
	b := dial(ctx, t, srv.http.URL, fastOptions("b"))
	ra, rb := join(ctx, t, a, "r"), join(ctx, t, b, "r")
	ea, eb := collect(ra), collect(rb)
	sidA := a.Stats().SessionID

	// 1. The server's answers to a stop halfway: a sends five events and
	// a patch, which the server applies (b sees them), but the oks do not
	// reach a before the cut. (First a's writer must be idle: over HTTP,
	// a send whose answer is held holds up the sends after it.)
	ea.wait(ctx, t, "a sees b join", func(all []client.Event) bool { return count(all, client.EventMemberJoin) == 1 })
	check(t, client.WaitWriterIdle(ctx, a))
	px.hold()
	for i := 1; i <= 5; i++ {
		if err := ra.Publish(json.RawMessage(fmt.Sprintf(`"a%d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := ra.Patch(json.RawMessage(`[{"op":"add","path":"/a","value":[1]}]`)); err != nil {
		t.Fatal(err)
	}
	// Over HTTP only the first send gets through: the next waits for
	// its answer (one send in flight), which is held.
	eb.wait(ctx, t, "b sees a's first five events and patch", func(all []client.Event) bool {
		if tr != client.TransportWS {
			return count(all, client.EventPublish) >= 1
		}
		return count(all, client.EventPublish) == 5 && count(all, client.EventPatch) == 1
	})
	if tr != client.TransportWS {
		t.Logf("%s: the server applied %d of a's messages before the cut", tr, len(eb.snapshot())-1)
	}
	if ra.Pending() != 1 {
		t.Fatalf("a has %d pending patches before the cut, want 1", ra.Pending())
	}
	px.setRefuse(true)
	px.cut()
	waitState(ctx, t, a, client.StateDisconnected)

	// 2. a is offline: b carries on, a queues.
	for i := 1; i <= 20; i++ {
		if err := rb.Publish(json.RawMessage(fmt.Sprintf(`"b%d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := rb.Patch(json.RawMessage(`[{"op":"add","path":"/b","value":true}]`)); err != nil {
		t.Fatal(err)
	}
	for i := 6; i <= 10; i++ {
		if err := ra.Publish(json.RawMessage(fmt.Sprintf(`"a%d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := ra.Patch(json.RawMessage(`[{"op":"add","path":"/a/-","value":2}]`)); err != nil {
		t.Fatal(err)
	}
	if doc, _ := ra.Doc(); string(doc) != `{"a":[1,2]}` {
		t.Fatalf("a's local view while offline: %s", doc)
	}
	if err := rb.Settle(ctx); err != nil {
		t.Fatal(err)
	}

	// 3. The network comes back.
	px.setRefuse(false)
	converged(ctx, t, srv, "r", ra, rb)
	st := a.Stats()
	if st.SessionID != sidA || st.Resumes != 1 || st.Sessions != 2 {
		t.Errorf("a's stats after the cut: %+v; want session %s resumed once", st, sidA)
	}
	eb.wait(ctx, t, "b sees all ten of a's events", func(all []client.Event) bool { return count(all, client.EventPublish) == 10 })
	ea.wait(ctx, t, "a sees b's twenty events", func(all []client.Event) bool { return count(all, client.EventPublish) == 20 })
	// a1..a5 were on the way when the connection was cut: see
	// exactlyOnce for why only the order of a6..a10 is certain.
	exactlyOnce(t, "b", publishes(t, "b", eb.snapshot()), seqStrings("a", 1, 10), seqStrings("a", 6, 10))
	if got := publishes(t, "a", ea.snapshot()); !equalStrings(got, seqStrings("b", 1, 20)) {
		t.Errorf("a saw b's events %v, want b1..b20 once each, in order", got)
	}
	// a's offline patch was sent after a10, so its event may still be on
	// its way to b's channel: wait for it, then check there is no third.
	eb.wait(ctx, t, "b sees a's two patches", func(all []client.Event) bool { return count(all, client.EventPatch) >= 2 })
	if n := count(eb.snapshot(), client.EventPatch); n != 2 {
		t.Errorf("b saw %d patches from a, want 2", n)
	}
	doc, _, _, _ := srv.hub.Snapshot("r")
	var d struct {
		A []int `json:"a"`
		B bool  `json:"b"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || len(d.A) != 2 || !d.B {
		t.Errorf("server document %s: want a's two patches applied once each and b's", doc)
	}
	for _, ev := range ea.snapshot() {
		if ev.Kind == client.EventMemberLeave || ev.Kind == client.EventRejected {
			t.Errorf("a: unexpected event %+v", ev)
		}
	}
}

// TestRejoinPastWindow: a stays offline past the resume window; the
// server ends its session (b sees it leave). When a comes back it gets a
// new session, rejoins with since = its last room seq and gets the replay;
// what it queued offline is applied once.
func TestRejoinPastWindow(t *testing.T) { eachTransport(t, testRejoinPastWindow) }

func testRejoinPastWindow(t *testing.T, tr string) {
	ctx := deadline(t, 30*time.Second)
	srv := newServer(t, nil, &transport.Options{ResumeWindow: 200 * time.Millisecond})
	px := newProxy(t, srv.addr())
	a := dial(ctx, t, px.url(), forced("a", tr))
	b := dial(ctx, t, srv.http.URL, fastOptions("b"))
	ra, rb := join(ctx, t, a, "w"), join(ctx, t, b, "w")
	ea, eb := collect(ra), collect(rb)
	if err := rb.Patch(json.RawMessage(`[{"op":"add","path":"/n","value":0}]`)); err != nil {
		t.Fatal(err)
	}
	if err := ra.WaitSeq(ctx, 1); err != nil {
		t.Fatal(err)
	}
	sidA := a.Stats().SessionID

	px.setRefuse(true)
	px.cut()
	eb.wait(ctx, t, "a's session to end (b sees a leave)", func(all []client.Event) bool {
		for _, ev := range all {
			if ev.Kind == client.EventMemberLeave && ev.Member.SID == sidA {
				return true
			}
		}
		return false
	})
	for i := 1; i <= 5; i++ {
		if err := rb.Publish(json.RawMessage(fmt.Sprintf(`"b%d"`, i))); err != nil {
			t.Fatal(err)
		}
		if err := rb.Patch(json.RawMessage(fmt.Sprintf(`[{"op":"replace","path":"/n","value":%d}]`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := ra.Patch(json.RawMessage(`[{"op":"add","path":"/offline","value":"a"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := ra.Publish(json.RawMessage(`"from a, offline"`)); err != nil {
		t.Fatal(err)
	}
	if err := rb.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	px.setRefuse(false)

	converged(ctx, t, srv, "w", ra, rb)
	st := a.Stats()
	if st.SessionID == sidA || st.Resumes != 0 || st.Sessions != 2 {
		t.Errorf("a's stats: %+v; want a second, new session", st)
	}
	ea.wait(ctx, t, "a sees the replay", func(all []client.Event) bool {
		return count(all, client.EventPublish) == 5 && count(all, client.EventPatch) >= 6
	})
	evs := ea.snapshot()
	if got := publishes(t, "a", evs); !equalStrings(got, seqStrings("b", 1, 5)) {
		t.Errorf("a's replayed events %v, want b1..b5", got)
	}
	if n := count(evs, client.EventPatch); n != 6 || count(evs, client.EventResync) != 0 {
		t.Errorf("a saw %d patches (want 6: one before, five replayed) and %d resyncs (want 0)", n, count(evs, client.EventResync))
	}
	eb.wait(ctx, t, "b sees a's offline messages", func(all []client.Event) bool {
		return count(all, client.EventPublish) == 1 && count(all, client.EventPatch) == 1
	})
	if doc, _, _, _ := srv.hub.Snapshot("w"); string(doc) != `{"n":5,"offline":"a"}` {
		t.Errorf("server document %s", doc)
	}
}

// TestResyncAndRebase: as TestRejoinPastWindow, but the room log keeps 5
// entries, so the rejoin cannot be served by a replay: the server sends a
// snapshot and says so, and a's pending patches are rebased on it — the one
// that still applies is accepted, the compare-and-set that no longer holds
// is rejected and reported.
func TestResyncAndRebase(t *testing.T) { eachTransport(t, testResyncAndRebase) }

func testResyncAndRebase(t *testing.T, tr string) {
	ctx := deadline(t, 30*time.Second)
	srv := newServer(t, &room.Options{Log: room.LogLimits{MaxEntries: 5}}, &transport.Options{ResumeWindow: 200 * time.Millisecond})
	px := newProxy(t, srv.addr())
	a := dial(ctx, t, px.url(), forced("a", tr))
	b := dial(ctx, t, srv.http.URL, fastOptions("b"))
	ra, rb := join(ctx, t, a, "t"), join(ctx, t, b, "t")
	ea, eb := collect(ra), collect(rb)
	if err := rb.Patch(json.RawMessage(`[{"op":"add","path":"/x","value":0}]`)); err != nil {
		t.Fatal(err)
	}
	if err := ra.WaitSeq(ctx, 1); err != nil {
		t.Fatal(err)
	}
	sidA := a.Stats().SessionID

	px.setRefuse(true)
	px.cut()
	eb.wait(ctx, t, "a's session to end", func(all []client.Event) bool { return count(all, client.EventMemberLeave) == 1 })
	for i := 1; i <= 12; i++ { // more than the log keeps
		if err := rb.Patch(json.RawMessage(fmt.Sprintf(`[{"op":"replace","path":"/x","value":%d}]`, i))); err != nil {
			t.Fatal(err)
		}
	}
	// Offline, a makes two patches against x == 0.
	if err := ra.Patch(json.RawMessage(`[{"op":"add","path":"/mine","value":1}]`)); err != nil {
		t.Fatal(err)
	}
	if err := ra.Patch(json.RawMessage(`[{"op":"test","path":"/x","value":0},{"op":"replace","path":"/x","value":-1}]`)); err != nil {
		t.Fatal(err)
	}
	if doc, _ := ra.Doc(); string(doc) != `{"x":-1,"mine":1}` {
		t.Fatalf("a's local view offline: %s", doc)
	}
	if err := rb.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	px.setRefuse(false)

	converged(ctx, t, srv, "t", ra, rb)
	if st := a.Stats(); st.SessionID == sidA || st.Resumes != 0 {
		t.Errorf("a's stats: %+v", st)
	}
	ea.wait(ctx, t, "a's resync and rejection", func(all []client.Event) bool {
		return count(all, client.EventResync) == 1 && count(all, client.EventRejected) == 1
	})
	for _, ev := range ea.snapshot() {
		switch ev.Kind {
		case client.EventResync:
			if ev.Seq != 13 || ev.Version != 13 {
				t.Errorf("resync at seq %d version %d, want 13/13", ev.Seq, ev.Version)
			}
		case client.EventRejected:
			if !errors.Is(ev.Err, room.ErrConflict) || !bytes.Contains(ev.Ops, []byte(`"test"`)) {
				t.Errorf("rejected: %v, ops %s; want the compare-and-set, as a conflict", ev.Err, ev.Ops)
			}
		case client.EventPatch:
			if ev.Seq > 1 {
				t.Errorf("a was sent patch seq %d individually; the resync should replace them", ev.Seq)
			}
		}
	}
	if doc, _ := ra.Doc(); string(doc) != `{"x":12,"mine":1}` {
		t.Errorf("a's document: %s", doc)
	}
}

// exactlyOnce checks that got holds each element of want exactly once, and
// the elements of ordered in that order.
//
// Messages a client had sent when its connection broke may still be being
// handled by the server when their copies, re-sent after the reconnect,
// arrive; the server skips a copy whose first is under way (it answers
// when that one is done) and goes on with the messages after it, which
// may so be applied first. Each is applied once, and every member sees the
// same order, but not necessarily the order the client sent them in.
func exactlyOnce(t *testing.T, who string, got, want, ordered []string) {
	t.Helper()
	n := map[string]int{}
	for _, s := range got {
		n[s]++
	}
	for _, s := range want {
		if n[s] != 1 {
			t.Errorf("%s saw %s %d times, want once: %v", who, s, n[s], got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s saw %d messages, want %d: %v", who, len(got), len(want), got)
	}
	i := 0
	for _, s := range got {
		if i < len(ordered) && s == ordered[i] {
			i++
		}
	}
	if i != len(ordered) {
		t.Errorf("%s saw %v, want %v in that order", who, got, ordered)
	}
}
