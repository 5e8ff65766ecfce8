package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/roomwire/roomwire/room"
)

// machine drives a client's message handling directly, with no network:
// the test plays the server.
type machine struct {
	t    *testing.T
	c    *Client
	sseq uint64
}

func newMachine(t *testing.T) *machine {
	o := (&Options{EventBuffer: 4}).withDefaults()
	c := newClient(&o, nil)
	c.mu.Lock()
	c.onWelcome(&welcome{Type: room.TypeWelcome, SID: "me", Token: "tok"}, false)
	c.mu.Unlock()
	t.Cleanup(func() {
		c.shutdown(nil)
		c.cancel()
		c.wg.Wait()
	})
	return &machine{t: t, c: c}
}

// feed delivers server messages, numbering the durable ones.
func (m *machine) feed(msgs ...string) {
	m.t.Helper()
	var frame []string
	for _, s := range msgs {
		if !strings.HasPrefix(s, `{"t":"eph"`) {
			m.sseq++
			s = fmt.Sprintf(`{"sseq":%d,%s`, m.sseq, s[1:])
		}
		frame = append(frame, s)
	}
	if err := m.c.handleFrame([]byte(strings.Join(frame, "\n"))); err != nil {
		m.t.Fatalf("handleFrame: %v", err)
	}
}

// join makes a room whose join the server answers with a snapshot.
func (m *machine) join(name, doc string, seq uint64) *Room {
	m.t.Helper()
	c := m.c
	c.mu.Lock()
	r := c.newRoom(name)
	c.rooms[name] = r
	e := c.newEntry(room.TypeJoin, r, nil)
	r.joinReq = e
	c.enqueue(e)
	c.mu.Unlock()
	m.feed(fmt.Sprintf(`{"t":"joined","room":%q,"cid":%q,"mode":"snapshot","seq":%d,"v":%d,"data":%s,"members":[{"sid":"me","transport":"ws"}]}`, name, e.cid, seq, seq, doc))
	if r.state != roomJoined {
		m.t.Fatalf("room %s not joined", name)
	}
	return r
}

// cids returns the ids of r's pending patches.
func (m *machine) cids(r *Room) []string {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	var s []string
	for _, e := range r.pending {
		s = append(s, e.cid)
	}
	return s
}

// newSession plays a reconnect past the resume window, and returns the cid
// of r's rejoin and the since it carried.
func (m *machine) newSession(r *Room) (string, string) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onWelcome(&welcome{Type: room.TypeWelcome, SID: "me2", Token: "tok2"}, false)
	m.sseq = 0
	var env room.Envelope
	json.Unmarshal(r.joinReq.body, &env)
	since := "nil"
	if env.Since != nil {
		since = fmt.Sprint(*env.Since)
	}
	return r.joinReq.cid, since
}

func (m *machine) doc(r *Room, want string) {
	m.t.Helper()
	if got, _ := r.Doc(); string(got) != want {
		m.t.Fatalf("local view %s, want %s", got, want)
	}
}

func (m *machine) confirmed(r *Room, want string, v, seq uint64) {
	m.t.Helper()
	if got, gv, gs := r.Confirmed(); string(got) != want || gv != v || gs != seq {
		m.t.Fatalf("confirmed %s v%d seq %d, want %s v%d seq %d", got, gv, gs, want, v, seq)
	}
}

func (m *machine) events(r *Room) []Event {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	var out []Event
	for {
		ev, ok := r.box.pop(r.name)
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

func kinds(evs []Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Kind.String())
	}
	return strings.Join(s, ",")
}

// subscribe turns r's mailbox on without a pump, so that the test pops.
func (m *machine) subscribe(r *Room) {
	m.c.mu.Lock()
	r.box.on = true
	m.c.mu.Unlock()
}

func TestPipelinedPatchesAndRebase(t *testing.T) {
	m := newMachine(t)
	r := m.join("d", `{"x":0}`, 1)
	m.subscribe(r)
	must(t, r.Patch(json.RawMessage(`[{"op":"add","path":"/a","value":1}]`)))
	must(t, r.Patch(json.RawMessage(`[{"op":"test","path":"/x","value":0},{"op":"replace","path":"/x","value":5}]`)))
	must(t, r.Patch(json.RawMessage(`[{"op":"add","path":"/b","value":2}]`)))
	p := m.cids(r)
	m.doc(r, `{"x":5,"a":1,"b":2}`)
	// Another member changes x first: the compare-and-set no longer
	// applies, so the rebased view leaves it out.
	m.feed(`{"t":"patch","room":"d","cid":"o1","seq":2,"v":2,"from":"other","ops":[{"op":"replace","path":"/x","value":9}]}`)
	m.confirmed(r, `{"x":9}`, 2, 2)
	m.doc(r, `{"x":9,"a":1,"b":2}`)
	// The server accepts the first, rejects the second, accepts the third.
	m.feed(
		fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":3,"v":3}`, p[0]),
		fmt.Sprintf(`{"t":"error","room":"d","cid":%q,"code":"conflict","msg":"stale","v":3}`, p[1]),
		fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":4,"v":4}`, p[2]),
	)
	m.confirmed(r, `{"x":9,"a":1,"b":2}`, 4, 4)
	m.doc(r, `{"x":9,"a":1,"b":2}`)
	if r.Pending() != 0 || r.outstanding != 0 {
		t.Fatalf("pending %d, outstanding %d", r.Pending(), r.outstanding)
	}
	evs := m.events(r)
	if kinds(evs) != "patch,rejected" || !errors.Is(evs[1].Err, room.ErrConflict) || evs[1].CID != p[1] {
		t.Fatalf("events %s: %+v", kinds(evs), evs)
	}
	// A patch that does not apply to the local view is refused at once.
	if err := r.Patch(json.RawMessage(`[{"op":"remove","path":"/nope"}]`)); !errors.Is(err, room.ErrBadPatch) {
		t.Fatalf("patch on a missing path: %v", err)
	}
}

func TestResyncRebasesPending(t *testing.T) {
	m := newMachine(t)
	r := m.join("d", `{"x":0}`, 1)
	m.subscribe(r)
	// Offline (the connection dropped): two patches against x == 0.
	must(t, r.Patch(json.RawMessage(`[{"op":"add","path":"/mine","value":1}]`)))
	must(t, r.Patch(json.RawMessage(`[{"op":"test","path":"/x","value":0},{"op":"replace","path":"/x","value":-1}]`)))
	p := m.cids(r)
	m.doc(r, `{"x":-1,"mine":1}`)
	cid, since := m.newSession(r)
	if since != "1" {
		t.Fatalf("rejoin since %s, want 1", since)
	}
	// The log no longer reaches back: an explicit resync.
	m.feed(fmt.Sprintf(`{"t":"joined","room":"d","cid":%q,"mode":"resync","seq":13,"v":13,"data":{"x":12},"members":[{"sid":"me2","transport":"ws"}]}`, cid))
	m.confirmed(r, `{"x":12}`, 13, 13)
	m.doc(r, `{"x":12,"mine":1}`) // rebased; the compare-and-set left out
	if r.Pending() != 2 {
		t.Fatalf("pending %d, want 2 (both still await their verdict)", r.Pending())
	}
	m.feed(
		fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":14,"v":14}`, p[0]),
		fmt.Sprintf(`{"t":"error","room":"d","cid":%q,"code":"conflict","msg":"stale","v":14}`, p[1]),
	)
	m.confirmed(r, `{"x":12,"mine":1}`, 14, 14)
	m.doc(r, `{"x":12,"mine":1}`)
	evs := m.events(r)
	if kinds(evs) != "resync,member-leave,member-join,rejected" {
		t.Fatalf("events: %s", kinds(evs))
	}
}

func TestOwnEntriesFromEarlierSession(t *testing.T) {
	m := newMachine(t)
	r := m.join("d", `{}`, 5)
	m.subscribe(r)
	must(t, r.Patch(json.RawMessage(`[{"op":"add","path":"/a","value":1}]`)))
	must(t, r.Patch(json.RawMessage(`[{"op":"add","path":"/b","value":1}]`)))
	must(t, r.Publish(json.RawMessage(`"hi"`)))
	p := m.cids(r)
	var pub string
	m.c.mu.Lock()
	for _, e := range m.c.inflight {
		if e.kind == room.TypePub {
			pub = e.cid
		}
	}
	m.c.mu.Unlock()
	cid, _ := m.newSession(r)
	// The server had committed the first patch and the publish before the
	// old session ended: the replay shows them, from the old session id.
	m.feed(
		fmt.Sprintf(`{"t":"joined","room":"d","cid":%q,"mode":"replay","seq":5,"members":[]}`, cid),
		fmt.Sprintf(`{"t":"patch","room":"d","cid":%q,"seq":6,"v":6,"from":"me","ops":[{"op":"add","path":"/a","value":1}]}`, p[0]),
		fmt.Sprintf(`{"t":"event","room":"d","cid":%q,"seq":7,"v":6,"from":"me","data":"hi"}`, pub),
	)
	m.confirmed(r, `{"a":1}`, 6, 7)
	if got := m.cids(r); len(got) != 1 || got[0] != p[1] {
		t.Fatalf("pending after the replay: %v", got)
	}
	// The re-sent copies: the server's dedup answers the committed ones
	// with their original seq (already applied: ignored), and applies the
	// other.
	m.feed(
		fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":6,"v":6}`, p[0]),
		fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":8,"v":7}`, p[1]),
		fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":7,"v":6}`, pub),
	)
	m.confirmed(r, `{"a":1,"b":1}`, 7, 8)
	m.doc(r, `{"a":1,"b":1}`)
	if evs := m.events(r); kinds(evs) != "member-leave" { // "me" (the old session) is gone
		t.Fatalf("events: %s", kinds(evs))
	}
	if r.outstanding != 0 || len(m.c.inflight) != 0 {
		t.Fatalf("outstanding %d, inflight %d", r.outstanding, len(m.c.inflight))
	}
}

func TestAcceptedAfterRejection(t *testing.T) {
	m := newMachine(t)
	r := m.join("d", `{}`, 1)
	m.subscribe(r)
	must(t, r.Patch(json.RawMessage(`[{"op":"add","path":"/a","value":1}]`)))
	p := m.cids(r)
	// Transient refusals are retried, not reported ...
	for range maxRetries {
		m.feed(fmt.Sprintf(`{"t":"error","room":"d","cid":%q,"code":"rate_limited","msg":"slow down"}`, p[0]))
	}
	m.doc(r, `{"a":1}`)
	if evs := m.events(r); len(evs) != 0 || r.Pending() != 1 {
		t.Fatalf("after %d rate_limited refusals: events %s, pending %d", maxRetries, kinds(evs), r.Pending())
	}
	// ... up to a point.
	m.feed(fmt.Sprintf(`{"t":"error","room":"d","cid":%q,"code":"rate_limited","msg":"slow down"}`, p[0]))
	m.doc(r, `{}`)
	// The refusal was in flight when the connection broke; the copy the
	// client re-sent was accepted.
	m.feed(fmt.Sprintf(`{"t":"ok","room":"d","cid":%q,"seq":2,"v":2}`, p[0]))
	m.confirmed(r, `{"a":1}`, 2, 2)
	m.doc(r, `{"a":1}`)
	if evs := m.events(r); kinds(evs) != "rejected,patch" || evs[1].From != "me" || evs[1].CID != p[0] {
		t.Fatalf("events: %+v", evs)
	}
}

func TestSessionSeqChecks(t *testing.T) {
	m := newMachine(t)
	r := m.join("d", `{}`, 0)
	m.feed(`{"t":"event","room":"d","seq":1,"v":0,"from":"o","data":1}`)
	// A duplicate session seq is ignored; a gap ends the connection.
	for range 2 {
		if err := m.c.handleFrame([]byte(`{"sseq":3,"t":"event","room":"d","seq":2,"v":0,"from":"o","data":2}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, seq := r.Confirmed(); seq != 2 {
		t.Fatalf("seq %d", seq)
	}
	if err := m.c.handleFrame([]byte(`{"sseq":5,"t":"event","room":"d","seq":3,"v":0,"from":"o","data":3}`)); err == nil {
		t.Fatal("a session seq gap was accepted")
	}
	// A room seq gap (which a correct server never sends) makes the
	// client rejoin with since, ignoring the room until the reply.
	m.sseq = 3
	m.feed(`{"t":"event","room":"d","seq":5,"v":0,"from":"o","data":5}`)
	m.c.mu.Lock()
	rejoin := r.rejoining
	var env room.Envelope
	json.Unmarshal(r.joinReq.body, &env)
	m.c.mu.Unlock()
	if !rejoin || env.Since == nil || *env.Since != 2 {
		t.Fatalf("after a room seq gap: rejoining %v, since %v", rejoin, env.Since)
	}
}

func TestMailbox(t *testing.T) {
	b := mailbox{on: true, sig: make(chan struct{}, 1), eph: map[valueKey]Event{}}
	for i := 1; i <= 6; i++ {
		b.push(Event{Kind: EventPublish, Seq: uint64(i)}, 4)
		b.push(Event{Kind: EventEphemeral, From: "x", Key: "cursor", Data: json.RawMessage(fmt.Sprint(i))}, 4)
	}
	b.push(Event{Kind: EventEphemeral, From: "y", Key: "cursor", Data: json.RawMessage(`0`)}, 4)
	var got []string
	for {
		ev, ok := b.pop("r")
		if !ok {
			break
		}
		switch ev.Kind {
		case EventEphemeral:
			got = append(got, ev.From+"="+string(ev.Data))
		case EventOverflow:
			got = append(got, fmt.Sprintf("lost %d", ev.Lost))
		default:
			got = append(got, fmt.Sprint(ev.Seq))
		}
	}
	// Ephemeral first, latest per sender and key; four durable events,
	// then the marker for the two discarded.
	if s := strings.Join(got, " "); s != "x=6 y=0 1 2 3 4 lost 2" {
		t.Fatalf("mailbox order: %s", s)
	}
	// After the marker, new events queue again, behind a marker for any
	// further loss.
	for i := 7; i <= 12; i++ {
		b.push(Event{Kind: EventPublish, Seq: uint64(i)}, 4)
	}
	b.pop("r")
	b.push(Event{Kind: EventPublish, Seq: 13}, 4)
	got = got[:0]
	for {
		ev, ok := b.pop("r")
		if !ok {
			break
		}
		if ev.Kind == EventOverflow {
			got = append(got, fmt.Sprintf("lost %d", ev.Lost))
		} else {
			got = append(got, fmt.Sprint(ev.Seq))
		}
	}
	if s := strings.Join(got, " "); s != "8 9 10 lost 2 13" {
		t.Fatalf("mailbox after overflow: %s", s)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLazyAcks: on connections where an ack costs a request (SSE), the
// writer sends one alone only after ackBatch messages (or ackDelay, which
// the writer's timer turns into ackNow); otherwise the ack rides on the
// next frame.
func TestLazyAcks(t *testing.T) {
	m := newMachine(t)
	r := m.join("d", `{}`, 0) // sseq 1
	c := m.c
	for range 10 {
		m.feed(`{"t":"event","room":"d","seq":0,"v":0,"from":"o","data":1}`)
	}
	if frame, withheld := c.nextFrame(false, false); frame != nil || !withheld {
		t.Fatalf("11 messages, nothing to send: frame %q, withheld %v; want the ack withheld", frame, withheld)
	}
	if frame, _ := c.nextFrame(false, true); string(frame) != `{"t":"ack","ack":11}` {
		t.Fatalf("ack due: %q", frame)
	}
	for range ackBatch {
		m.feed(`{"t":"event","room":"d","seq":0,"v":0,"from":"o","data":1}`)
	}
	if frame, _ := c.nextFrame(false, false); string(frame) != fmt.Sprintf(`{"t":"ack","ack":%d}`, 11+ackBatch) {
		t.Fatalf("after %d messages: %q, want the ack alone", ackBatch, frame)
	}
	m.feed(`{"t":"event","room":"d","seq":0,"v":0,"from":"o","data":1}`)
	must(t, r.Publish(json.RawMessage(`"x"`)))
	c.mu.Lock()
	c.sendq = append(c.sendq, c.inflight...) // as if connected
	c.mu.Unlock()
	frame, withheld := c.nextFrame(false, false)
	if lines := strings.Split(string(frame), "\n"); len(lines) != 2 || lines[0] != fmt.Sprintf(`{"t":"ack","ack":%d}`, 12+ackBatch) || withheld {
		t.Fatalf("a publish to send: %q, want the ack in front of it", frame)
	}
	if frame, withheld := c.nextFrame(false, false); frame != nil || withheld {
		t.Fatalf("then %q, %v; want nothing", frame, withheld)
	}
}
