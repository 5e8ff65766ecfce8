// Package roomtest is roomwire's conformance suite: the same scenarios run
// against every transport (and, later, every broker and store), through the
// wire protocol only. A transport's test provides a Factory that starts a
// server and dials it; Run does the rest.
//
//	func TestConformance(t *testing.T) { roomtest.Run(t, factory) }
//
// Each scenario starts its own server, with its own deadline. Scenarios run
// their clients concurrently; Run itself does not call t.Parallel.
package roomtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout is each scenario's deadline.
var Timeout = 60 * time.Second

// Run runs every scenario against the servers f starts.
func Run(t *testing.T, f Factory) {
	for _, sc := range []struct {
		name string
		fn   func(context.Context, *testing.T, Factory)
	}{
		{"JoinReplyAndPresence", joinReplyAndPresence},
		{"DurableOrder", durableOrder},
		{"PatchAckBroadcastReject", patchAckBroadcastReject},
		{"Idempotency", idempotency},
		{"Resume", resume},
		{"ResumeExpiredReplay", resumeExpiredReplay},
		{"ResyncWhenLogTruncated", resyncWhenLogTruncated},
		{"BadInput", badInput},
		{"SlowConsumer", slowConsumer},
		{"Ephemeral", ephemeral},
		{"SignalAndRelay", signalAndRelay},
		{"Bye", bye},
	} {
		t.Run(sc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), Timeout)
			defer cancel()
			sc.fn(ctx, t, f)
		})
	}
}

func joinReplyAndPresence(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	c := Connect(ctx, t, dial, "c", nil)

	j := a.Join(ctx, "lobby", nil)
	if j.Mode != "snapshot" || j.seq() != 0 || j.v() != 0 || string(j.Data) != "{}" || j.Seq == nil || j.V == nil {
		t.Fatalf("first join: want snapshot of {} at seq 0, version 0; got %s", j.Raw)
	}
	if len(j.Members) != 1 || j.Members[0].SID != a.SID || !bytes.Contains(j.Members[0].User, []byte(`"a"`)) || j.Members[0].Transport == "" {
		t.Fatalf("first join members: %s", j.Raw)
	}
	// A patch and an event, so the next join's snapshot has content.
	if ok := a.Request(ctx, map[string]any{"t": "patch", "room": "lobby", "base": 0, "ops": json.RawMessage(`[{"op":"add","path":"/title","value":"hi"}]`)}); ok.T != "ok" || ok.seq() != 1 || ok.v() != 1 {
		t.Fatalf("patch reply: %s", ok.Raw)
	}
	if ok := a.Request(ctx, map[string]any{"t": "pub", "room": "lobby", "data": map[string]int{"n": 1}}); ok.T != "ok" || ok.seq() != 2 || ok.v() != 1 {
		t.Fatalf("pub reply: %s", ok.Raw)
	}
	aFrom := 0
	j = b.Join(ctx, "lobby", nil)
	if j.Mode != "snapshot" || j.seq() != 2 || j.v() != 1 || string(j.Data) != `{"title":"hi"}` {
		t.Fatalf("second join: want {\"title\":\"hi\"} at seq 2, version 1; got %s", j.Raw)
	}
	if sids := memberSIDs(j.Members); !slices.Equal(sids, sorted(a.SID, b.SID)) {
		t.Fatalf("second join members %v, want %v", sids, sorted(a.SID, b.SID))
	}
	p := a.WaitFor(ctx, &aFrom, "presence join of b", func(m *Msg) bool { return m.T == "presence" && m.Event == "join" })
	if p.Member == nil || p.Member.SID != b.SID || p.Room != "lobby" {
		t.Fatalf("presence: %s", p.Raw)
	}
	c.Join(ctx, "lobby", nil)
	bFrom := 0
	b.WaitFor(ctx, &bFrom, "presence join of c", func(m *Msg) bool { return m.T == "presence" && m.Event == "join" && m.Member.SID == c.SID })
	if ok := c.Request(ctx, map[string]any{"t": "leave", "room": "lobby"}); ok.T != "ok" {
		t.Fatalf("leave: %s", ok.Raw)
	}
	for _, x := range []*Client{a, b} {
		from := 0
		x.WaitFor(ctx, &from, "presence leave of c", func(m *Msg) bool { return m.T == "presence" && m.Event == "leave" && m.Member.SID == c.SID })
	}
	// Joining again is harmless: a fresh snapshot, no second presence.
	if j := b.Join(ctx, "lobby", nil); len(j.Members) != 2 {
		t.Fatalf("rejoin members: %s", j.Raw)
	}
}

// durableOrder: three senders, 1000 durable messages; every member sees
// every room seq exactly once (its own as ok, others' as event), and all
// agree on which message has which seq.
func durableOrder(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	const total = 1000
	clients := []*Client{Connect(ctx, t, dial, "a", nil), Connect(ctx, t, dial, "b", nil), Connect(ctx, t, dial, "c", nil)}
	for _, c := range clients {
		c.Join(ctx, "order", nil)
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		n := total / 3
		if i == 0 {
			n += total % 3
		}
		wg.Go(func() {
			for k := 0; k < n; k++ {
				c.Send(ctx, map[string]any{"t": "pub", "room": "order", "cid": c.NextCID(), "data": map[string]any{"k": k}})
			}
		})
	}
	wg.Wait()
	var first []string
	for _, c := range clients {
		bySeq := make([]string, total+1)
		from := 0
		for got := 0; got < total; got++ {
			m := c.WaitFor(ctx, &from, fmt.Sprintf("durable message %d of %d", got+1, total), func(m *Msg) bool {
				return m.Room == "order" && (m.T == "ok" || m.T == "event" || m.T == "error")
			})
			if m.T == "error" {
				t.Fatalf("%s: %s", c.name, m.Raw)
			}
			s := m.seq()
			if s < 1 || s > total || bySeq[s] != "" {
				t.Fatalf("%s: seq %d out of range or duplicated (%s)", c.name, s, m.Raw)
			}
			bySeq[s] = m.CID
		}
		for s := 1; s <= total; s++ {
			if bySeq[s] == "" {
				t.Fatalf("%s: seq %d missing", c.name, s)
			}
		}
		if first == nil {
			first = bySeq
		} else if !slices.Equal(first, bySeq) {
			t.Fatalf("%s disagrees with %s on the order", c.name, clients[0].name)
		}
	}
}

func patchAckBroadcastReject(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	a.Join(ctx, "doc", nil)
	b.Join(ctx, "doc", nil)
	patch := func(c *Client, base int, ops string) *Msg {
		return c.Request(ctx, map[string]any{"t": "patch", "room": "doc", "base": base, "ops": json.RawMessage(ops)})
	}
	if r := patch(a, 0, `[{"op":"add","path":"/n","value":1}]`); r.T != "ok" || r.v() != 1 || r.seq() != 1 {
		t.Fatalf("patch at current base: %s", r.Raw)
	}
	bFrom := 0
	bc := b.WaitFor(ctx, &bFrom, "broadcast patch", func(m *Msg) bool { return m.T == "patch" })
	if bc.From != a.SID || bc.v() != 1 || bc.seq() != 1 || string(bc.Ops) != `[{"op":"add","path":"/n","value":1}]` {
		t.Fatalf("broadcast: %s", bc.Raw)
	}
	// Stale base, still applies: accepted.
	if r := patch(b, 0, `[{"op":"add","path":"/m","value":2}]`); r.T != "ok" || r.v() != 2 {
		t.Fatalf("stale base that applies: %s", r.Raw)
	}
	// Stale base whose test fails: rejected with the current version.
	if r := patch(a, 1, `[{"op":"test","path":"/n","value":1},{"op":"test","path":"/m","value":3},{"op":"replace","path":"/n","value":5}]`); r.T != "error" || r.Code != "conflict" || r.v() != 2 {
		t.Fatalf("stale base, failing test: want conflict at v2, got %s", r.Raw)
	}
	// Current base, missing path: bad_patch, nothing changes.
	if r := patch(a, 2, `[{"op":"replace","path":"/nope","value":1}]`); r.T != "error" || r.Code != "bad_patch" || r.v() != 2 {
		t.Fatalf("missing path: %s", r.Raw)
	}
	// Base from the future: conflict.
	if r := patch(a, 9, `[{"op":"add","path":"/x","value":1}]`); r.T != "error" || r.Code != "conflict" {
		t.Fatalf("future base: %s", r.Raw)
	}
	c := Connect(ctx, t, dial, "c", nil)
	if j := c.Join(ctx, "doc", nil); string(j.Data) != `{"n":1,"m":2}` || j.v() != 2 {
		t.Fatalf("document after rejects: %s", j.Raw)
	}
}

func idempotency(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	a.Join(ctx, "idem", nil)
	b.Join(ctx, "idem", nil)
	a.Request(ctx, map[string]any{"t": "patch", "room": "idem", "base": 0, "ops": json.RawMessage(`[{"op":"add","path":"/list","value":[]}]`)})
	from := 0
	var oks []*Msg
	for i := 0; i < 2; i++ {
		a.Send(ctx, map[string]any{"t": "patch", "room": "idem", "cid": "same-patch", "base": 1, "ops": json.RawMessage(`[{"op":"add","path":"/list/-","value":1}]`)})
		a.Send(ctx, map[string]any{"t": "pub", "room": "idem", "cid": "same-pub", "data": "once"})
	}
	for i := 0; i < 4; i++ {
		oks = append(oks, a.WaitFor(ctx, &from, "ok for a retried message", func(m *Msg) bool {
			return strings.HasPrefix(m.CID, "same-") && (m.T == "ok" || m.T == "error")
		}))
	}
	seqOf := map[string]uint64{}
	for _, m := range oks {
		if m.T != "ok" {
			t.Fatalf("retry: %s", m.Raw)
		}
		if s, ok := seqOf[m.CID]; ok && s != m.seq() {
			t.Fatalf("retry of %s got seq %d, first got %d", m.CID, m.seq(), s)
		}
		seqOf[m.CID] = m.seq()
	}
	// b saw each exactly once, and the document has one element.
	b.Request(ctx, map[string]any{"t": "pub", "room": "idem", "data": "fence"})
	bFrom := 0
	b.WaitFor(ctx, &bFrom, "the fence", func(m *Msg) bool { return m.T == "ok" && m.seq() == 4 })
	count := map[string]int{}
	for _, m := range b.Messages() {
		if m.T == "patch" || m.T == "event" {
			count[m.CID]++
		}
	}
	if count["same-patch"] != 1 || count["same-pub"] != 1 {
		t.Fatalf("broadcasts per cid: %v", count)
	}
	c := Connect(ctx, t, dial, "c", nil)
	if j := c.Join(ctx, "idem", nil); string(j.Data) != `{"list":[1]}` {
		t.Fatalf("document: %s", j.Raw)
	}
}

// resume: a connection cut under a client; it resumes with its token and
// gets every durable message it missed exactly once, in order (the reader
// checks contiguous session seqs).
func resume(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{ResumeWindow: 30 * time.Second})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	a.Join(ctx, "r", nil)
	b.Join(ctx, "r", nil)
	a.Request(ctx, map[string]any{"t": "pub", "room": "r", "data": 0})
	bFrom := 0
	b.WaitFor(ctx, &bFrom, "first event", func(m *Msg) bool { return m.T == "event" })
	b.Stop() // the connection is cut; b's session waits out its window
	const missed = 200
	for i := 1; i <= missed; i++ {
		a.Send(ctx, map[string]any{"t": "pub", "room": "r", "cid": a.NextCID(), "data": i})
	}
	aFrom := 0
	a.WaitFor(ctx, &aFrom, "last ok", func(m *Msg) bool { return m.T == "ok" && m.seq() == missed+1 })
	b2 := Connect(ctx, t, dial, "b", b)
	if !b2.Welcome.Resumed || b2.SID != b.SID {
		t.Fatalf("resume refused: %s", b2.Welcome.Raw)
	}
	seen := map[uint64]bool{}
	from := 0
	for want := uint64(2); want <= missed+1; want++ {
		m := b2.WaitFor(ctx, &from, fmt.Sprintf("missed event seq %d", want), func(m *Msg) bool { return m.T == "event" })
		if m.seq() != want || seen[m.seq()] {
			t.Fatalf("after resume: got seq %d, want %d", m.seq(), want)
		}
		seen[m.seq()] = true
	}
	for _, m := range a.Messages() {
		if m.T == "presence" && m.Event == "leave" {
			t.Fatalf("a saw b leave during the resume window: %s", m.Raw)
		}
	}
	// Wrong token: no resume, a new session; b's session is unaffected.
	x := Connect(ctx, t, dial, "x", &Client{SID: b2.SID, Token: "wrong"})
	if x.Welcome.Resumed || x.SID == b.SID {
		t.Fatalf("resume with a wrong token was accepted: %s", x.Welcome.Raw)
	}
	a.Request(ctx, map[string]any{"t": "pub", "room": "r", "data": "after"})
	b2.WaitFor(ctx, &from, "event after the bad resume", func(m *Msg) bool { return m.T == "event" && string(m.Data) == `"after"` })
}

// resumeExpiredReplay: past the window the session is gone; the client
// rejoins with its last room seq and gets the replay.
func resumeExpiredReplay(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{ResumeWindow: 300 * time.Millisecond})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	a.Join(ctx, "x", nil)
	b.Join(ctx, "x", nil)
	for i := 0; i < 5; i++ {
		a.Request(ctx, map[string]any{"t": "pub", "room": "x", "data": i})
	}
	bFrom := 0
	b.WaitFor(ctx, &bFrom, "event seq 5", func(m *Msg) bool { return m.T == "event" && m.seq() == 5 })
	b.Stop()
	aFrom := 0
	// Others see b leave once the window has passed: the session is gone.
	a.WaitFor(ctx, &aFrom, "presence leave of b", func(m *Msg) bool { return m.T == "presence" && m.Event == "leave" && m.Member.SID == b.SID })
	for i := 5; i < 10; i++ {
		a.Request(ctx, map[string]any{"t": "pub", "room": "x", "data": i})
	}
	b2 := Connect(ctx, t, dial, "b", b)
	if b2.Welcome.Resumed {
		t.Fatalf("resumed past the window: %s", b2.Welcome.Raw)
	}
	since := uint64(5)
	j := b2.Join(ctx, "x", &since)
	if j.Mode != "replay" || j.seq() != 5 || j.Data != nil {
		t.Fatalf("rejoin: want replay from 5, got %s", j.Raw)
	}
	from := 0
	for want := uint64(6); want <= 10; want++ {
		m := b2.WaitFor(ctx, &from, fmt.Sprintf("replayed seq %d", want), func(m *Msg) bool { return m.T == "event" })
		if m.seq() != want {
			t.Fatalf("replay: got seq %d, want %d", m.seq(), want)
		}
	}
}

func resyncWhenLogTruncated(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{LogEntries: 10})
	a := Connect(ctx, t, dial, "a", nil)
	a.Join(ctx, "t", nil)
	for i := 0; i < 30; i++ {
		a.Request(ctx, map[string]any{"t": "patch", "room": "t", "base": i, "ops": json.RawMessage(fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, i, i))})
	}
	b := Connect(ctx, t, dial, "b", nil)
	since := uint64(3)
	j := b.Join(ctx, "t", &since)
	if j.Mode != "resync" || j.seq() != 30 || j.v() != 30 || !bytes.Contains(j.Data, []byte(`"k0":0`)) || !bytes.Contains(j.Data, []byte(`"k29":29`)) {
		t.Fatalf("rejoin past the log: want an explicit resync at seq 30, got %s", j.Raw)
	}
	since = 25 // still in the log: replay
	c := Connect(ctx, t, dial, "c", nil)
	if j := c.Join(ctx, "t", &since); j.Mode != "replay" {
		t.Fatalf("rejoin within the log: %s", j.Raw)
	}
}

// badInput: every bad message gets its documented error, and the room's
// state is unchanged.
func badInput(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	a := Connect(ctx, t, dial, "a", nil)
	a.Join(ctx, "b", nil)
	a.Request(ctx, map[string]any{"t": "patch", "room": "b", "base": 0, "ops": json.RawMessage(`[{"op":"add","path":"/ok","value":true}]`)})
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"op":"test","path":"/ok","value":true},`, 1001), ",") + "]"
	for _, tc := range []struct {
		name, code string
		msg        map[string]any
	}{
		{"unknown type", "unknown_type", map[string]any{"t": "frobnicate", "room": "b"}},
		{"patch without join", "not_member", map[string]any{"t": "patch", "room": "elsewhere", "base": 0, "ops": json.RawMessage(`[]`)}},
		{"pub without join", "not_member", map[string]any{"t": "pub", "room": "elsewhere", "data": 1}},
		{"leave without join", "not_member", map[string]any{"t": "leave", "room": "elsewhere"}},
		{"empty room name", "bad_room", map[string]any{"t": "join", "room": ""}},
		{"control char in room", "bad_room", map[string]any{"t": "join", "room": "a\u0001b"}},
		{"long room name", "bad_room", map[string]any{"t": "join", "room": strings.Repeat("r", 200)}},
		{"patch without base", "bad_request", map[string]any{"t": "patch", "room": "b", "ops": json.RawMessage(`[]`)}},
		{"patch not an array", "bad_patch", map[string]any{"t": "patch", "room": "b", "base": 1, "ops": json.RawMessage(`{"op":"add"}`)}},
		{"patch missing path", "bad_patch", map[string]any{"t": "patch", "room": "b", "base": 1, "ops": json.RawMessage(`[{"op":"remove","path":"/missing"}]`)}},
		{"patch unknown op", "bad_patch", map[string]any{"t": "patch", "room": "b", "base": 1, "ops": json.RawMessage(`[{"op":"frob","path":"/ok"}]`)}},
		{"patch too deep", "too_large", map[string]any{"t": "patch", "room": "b", "base": 1, "ops": json.RawMessage(`[{"op":"add","path":"/deep","value":` + deep + `}]`)}},
		{"patch too many ops", "too_large", map[string]any{"t": "patch", "room": "b", "base": 1, "ops": json.RawMessage(many)}},
		{"patch failing test", "test_failed", map[string]any{"t": "patch", "room": "b", "base": 1, "ops": json.RawMessage(`[{"op":"test","path":"/ok","value":false}]`)}},
	} {
		r := a.Request(ctx, tc.msg)
		if r.T != "error" || r.Code != tc.code || r.Text == "" {
			t.Errorf("%s: want error %q, got %s", tc.name, tc.code, r.Raw)
		}
	}
	// Malformed JSON and a non-object get bad_request (no cid to match).
	for _, raw := range []string{`{"t":`, `[1,2]`, `"hello"`, `{"room":"b"}`} {
		from := a.mark()
		a.SendRaw(ctx, []byte(raw))
		if r := a.WaitFor(ctx, &from, "error for "+raw, func(m *Msg) bool { return m.T == "error" }); r.Code != "bad_request" {
			t.Errorf("%s: want bad_request, got %s", raw, r.Raw)
		}
	}
	// A document over the size limit (1 MiB by default).
	big := strings.Repeat("x", 1<<20)
	if r := a.Request(ctx, map[string]any{"t": "patch", "room": "b", "base": 1, "ops": []map[string]any{{"op": "add", "path": "/big", "value": big[:40000]}, {"op": "copy", "from": "/big", "path": "/c1"}}}); r.T != "ok" {
		// within limits: accepted
		t.Fatalf("patch within limits: %s", r.Raw)
	}
	for i := 0; i < 30; i++ {
		r := a.Request(ctx, map[string]any{"t": "patch", "room": "b", "base": 2 + i, "ops": []map[string]any{{"op": "copy", "from": "/big", "path": fmt.Sprintf("/c%d", i+2)}}})
		if r.T == "error" {
			if r.Code != "too_large" {
				t.Fatalf("growing document: want too_large, got %s", r.Raw)
			}
			break
		}
		if i == 29 {
			t.Fatalf("a 1.2 MB document was accepted")
		}
	}
	// The connection still works and the document is intact.
	b := Connect(ctx, t, dial, "b", nil)
	j := b.Join(ctx, "b", nil)
	var doc map[string]any
	if err := json.Unmarshal(j.Data, &doc); err != nil || doc["ok"] != true || len(j.Data) > 1<<20 {
		t.Fatalf("document after bad input: %.200s (%v)", j.Data, err)
	}
	if ok := a.Request(ctx, map[string]any{"t": "pub", "room": "b", "data": "still here"}); ok.T != "ok" {
		t.Fatalf("after bad input: %s", ok.Raw)
	}
}

// slowConsumer: a client that stops reading is closed with the slow-consumer
// reason, while the others receive everything. The queue bound counts
// unacknowledged bytes, so a healthy client needs it to exceed what it has
// in flight; the publisher here keeps at most 16 messages outstanding.
func slowConsumer(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{MaxQueueBytes: 256 << 10})
	pub := Connect(ctx, t, dial, "pub", nil)
	fast := Connect(ctx, t, dial, "fast", nil)
	pub.Join(ctx, "s", nil)
	fast.Join(ctx, "s", nil)

	// The slow client joins, then neither reads nor acknowledges.
	conn, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Send(ctx, []byte(`{"t":"hello"}`))
	conn.Send(ctx, []byte(`{"t":"join","room":"s"}`))
	fastFrom := 0
	fast.WaitFor(ctx, &fastFrom, "presence join of the slow client", func(m *Msg) bool { return m.T == "presence" && m.Event == "join" })

	payload := strings.Repeat("p", 1000)
	const n = 1000 // 1 MB, far over the 256 KiB queue
	pubFrom := 0
	for i := 1; i <= n; i++ {
		cid := pub.NextCID()
		pub.Send(ctx, map[string]any{"t": "pub", "room": "s", "cid": cid, "data": payload})
		if i%16 == 0 {
			pub.WaitFor(ctx, &pubFrom, "ok", func(m *Msg) bool { return m.CID == cid })
		}
	}
	fast.WaitFor(ctx, &fastFrom, "presence leave of the slow client", func(m *Msg) bool { return m.T == "presence" && m.Event == "leave" })
	got, evFrom := 0, 0
	fast.WaitFor(ctx, &evFrom, "every event", func(m *Msg) bool {
		if m.T == "event" {
			got++
		}
		return got == n
	})
	// The slow client, reading at last, finds its messages and then the
	// slow-consumer close (on transports that carry close codes).
	for {
		_, err := conn.Recv(ctx)
		if err == nil {
			continue
		}
		var ce *CloseError
		if errors.As(err, &ce) && ce.Code != 4001 {
			t.Fatalf("slow client closed with %d %q, want 4001", ce.Code, ce.Text)
		}
		if ctx.Err() != nil {
			t.Fatal("slow client was never closed")
		}
		break
	}
}

// ephemeral: cursor values coalesce (latest wins) and never delay durable
// messages.
func ephemeral(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	a.Join(ctx, "e", nil)
	b.Join(ctx, "e", nil)
	const n = 300
	for i := 1; i <= n; i++ {
		a.Send(ctx, map[string]any{"t": "eph", "room": "e", "key": "cursor", "data": map[string]int{"x": i}})
		if i%50 == 0 {
			a.Send(ctx, map[string]any{"t": "pub", "room": "e", "cid": a.NextCID(), "data": i})
		}
	}
	from := 0
	last := b.WaitFor(ctx, &from, "the latest cursor", func(m *Msg) bool { return m.T == "eph" && string(m.Data) == fmt.Sprintf(`{"x":%d}`, n) })
	if last.From != a.SID || last.Key != "cursor" || last.SSeq != 0 {
		t.Fatalf("ephemeral message: %s", last.Raw)
	}
	evFrom := 0
	for k := 0; k < n/50; k++ {
		b.WaitFor(ctx, &evFrom, "durable events", func(m *Msg) bool { return m.T == "event" })
	}
	cursors, prev := 0, 0
	for _, m := range b.Messages() {
		if m.T != "eph" {
			continue
		}
		cursors++
		var v struct{ X int }
		json.Unmarshal(m.Data, &v)
		if v.X <= prev {
			t.Fatalf("cursor went back from %d to %d", prev, v.X)
		}
		prev = v.X
	}
	t.Logf("%d cursor values sent, %d delivered (rate cap and coalescing)", n, cursors)
}

func memberSIDs(ms []Member) []string {
	var s []string
	for _, m := range ms {
		s = append(s, m.SID)
	}
	return s
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// signalAndRelay: signal and relay reach exactly the one member named, only
// within a shared room.
func signalAndRelay(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	c := Connect(ctx, t, dial, "c", nil)
	a.Join(ctx, "sig", nil)
	b.Join(ctx, "sig", nil)
	c.Join(ctx, "sig", nil)
	outsider := Connect(ctx, t, dial, "o", nil)
	outsider.Join(ctx, "other", nil)

	a.Send(ctx, map[string]any{"t": "signal", "room": "sig", "to": b.SID, "data": map[string]string{"type": "offer", "sdp": "v=0"}})
	a.Send(ctx, map[string]any{"t": "relay", "room": "sig", "to": b.SID, "data": "durable"})
	a.Send(ctx, map[string]any{"t": "relay", "room": "sig", "to": b.SID, "key": "cursor", "data": map[string]int{"x": 1}})
	from := 0
	s := b.WaitFor(ctx, &from, "signal", func(m *Msg) bool { return m.T == "signal" })
	if s.From != a.SID || s.Room != "sig" || !bytes.Contains(s.Data, []byte(`"offer"`)) || s.SSeq == 0 {
		t.Fatalf("signal: %s", s.Raw)
	}
	if r := b.WaitFor(ctx, &from, "durable relay", func(m *Msg) bool { return m.T == "relay" && m.Key == "" }); r.From != a.SID || string(r.Data) != `"durable"` {
		t.Fatalf("relay: %s", r.Raw)
	}
	ephFrom := 0 // ephemeral values overtake durable messages: search from the start
	b.WaitFor(ctx, &ephFrom, "ephemeral relay", func(m *Msg) bool { return m.T == "relay" && m.Key == "cursor" && m.SSeq == 0 })
	// A keyed relay over the rate cap still ends on the latest value.
	for i := 2; i <= 300; i++ {
		a.Send(ctx, map[string]any{"t": "relay", "room": "sig", "to": b.SID, "key": "cursor", "data": map[string]int{"x": i}})
	}
	b.WaitFor(ctx, &ephFrom, "the latest relayed cursor", func(m *Msg) bool { return m.T == "relay" && string(m.Data) == `{"x":300}` })
	// Refused: to a member of another room, to a non-member, to oneself,
	// and from a room the sender is not in. Nothing is forwarded.
	for _, tc := range []map[string]any{
		{"t": "signal", "room": "sig", "to": outsider.SID, "data": "x"},
		{"t": "signal", "room": "sig", "to": "nobody", "data": "x"},
		{"t": "signal", "room": "sig", "to": a.SID, "data": "x"},
		{"t": "signal", "room": "other", "to": outsider.SID, "data": "x"},
		{"t": "relay", "room": "sig", "to": outsider.SID, "data": "x"},
		{"t": "relay", "room": "sig", "to": outsider.SID, "key": "k", "data": "x"},
	} {
		if r := a.Request(ctx, tc); r.T != "error" || r.Code != "not_member" {
			t.Errorf("%v: want not_member, got %s", tc, r.Raw)
		}
	}
	// A fence: c gets a's event, and saw none of the signals or relays.
	a.Request(ctx, map[string]any{"t": "pub", "room": "sig", "data": "fence"})
	cFrom := 0
	c.WaitFor(ctx, &cFrom, "fence", func(m *Msg) bool { return m.T == "event" })
	oFrom := 0
	outsider.Request(ctx, map[string]any{"t": "pub", "room": "other", "data": "fence"})
	outsider.WaitFor(ctx, &oFrom, "own fence", func(m *Msg) bool { return m.T == "ok" })
	for _, x := range []*Client{c, outsider} {
		for _, m := range x.Messages() {
			if m.T == "signal" || m.T == "relay" {
				t.Fatalf("%s received %s", x.name, m.Raw)
			}
		}
	}
}

// bye: a client that says bye leaves every room at once, and its session
// cannot be resumed.
func bye(ctx context.Context, t *testing.T, f Factory) {
	dial := f(t, Config{ResumeWindow: time.Minute})
	a := Connect(ctx, t, dial, "a", nil)
	b := Connect(ctx, t, dial, "b", nil)
	a.Join(ctx, "bye", nil)
	b.Join(ctx, "bye", nil)
	b.Send(ctx, map[string]any{"t": "bye"})
	from := 0
	a.WaitFor(ctx, &from, "b leaves at once", func(m *Msg) bool { return m.T == "presence" && m.Event == "leave" && m.Member.SID == b.SID })
	b.Stop()
	if b2 := Connect(ctx, t, dial, "b", b); b2.Welcome.Resumed {
		t.Fatalf("a session ended with bye was resumed: %s", b2.Welcome.Raw)
	}
}
