package room

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
)

// fakePresence records the hub's calls and lets the test play the other
// nodes' events.
type fakePresence struct {
	mu        sync.Mutex
	calls     []string // "join sid" / "leave sid"
	others    []Member
	fn        func(string, Member)
	cancelled int
}

func (p *fakePresence) Join(_ context.Context, _ string, m Member) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "join "+m.SID)
	return nil
}

func (p *fakePresence) Leave(_ context.Context, _, sid string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "leave "+sid)
	return nil
}

func (p *fakePresence) Watch(_ context.Context, _ string, fn func(string, Member)) ([]Member, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn = fn
	return p.others, func() { p.mu.Lock(); p.cancelled++; p.mu.Unlock() }, nil
}

func (p *fakePresence) event(ev string, m Member) {
	p.mu.Lock()
	fn := p.fn
	p.mu.Unlock()
	fn(ev, m)
}

func TestPresenceRemoteMembers(t *testing.T) {
	ctx := context.Background()
	p := &fakePresence{others: []Member{{SID: "x", Transport: "ws"}}}
	h := NewHub(&Options{Presence: p})
	s := newRecorder("s", 0)
	if err := h.Connect(s, json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	h.Handle(ctx, s, &Envelope{Type: TypeJoin, Room: "r", CID: "j"})
	j := s.last()
	var sids []string
	for _, m := range j["members"].([]any) {
		sids = append(sids, m.(map[string]any)["sid"].(string))
	}
	if j["t"] != "joined" || !slices.Equal(sids, []string{"s", "x"}) {
		t.Fatalf("joined: %v", j)
	}
	p.event("join", Member{SID: "y"})
	p.event("join", Member{SID: "y"}) // repeated: nothing new
	if m := s.last(); m["t"] != "presence" || m["event"] != "join" || m["member"].(map[string]any)["sid"] != "y" {
		t.Fatalf("after y joined: %v", m)
	}
	p.event("leave", Member{SID: "x"})
	if m := s.last(); m["t"] != "presence" || m["event"] != "leave" || m["member"].(map[string]any)["sid"] != "x" {
		t.Fatalf("after x left: %v", m)
	}
	s.mu.Lock()
	n := len(s.msgs)
	s.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d messages, want joined and two presence", n)
	}
	h.Handle(ctx, s, &Envelope{Type: TypeLeave, Room: "r", CID: "l"})
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(p.calls, []string{"join s", "leave s"}) || p.cancelled != 1 {
		t.Fatalf("calls %v, cancelled %d", p.calls, p.cancelled)
	}
}

// A join racing a Disconnect of the same session leaves the Presence
// agreeing with the room: the last call made says whether s is a member.
func TestPresenceJoinRacesDisconnect(t *testing.T) {
	ctx := context.Background()
	for range 50 {
		p := &fakePresence{}
		h := NewHub(&Options{Presence: p})
		s := newRecorder("s", 0)
		h.Connect(s, nil)
		var wg sync.WaitGroup
		wg.Go(func() { h.Handle(ctx, s, &Envelope{Type: TypeJoin, Room: "r"}) })
		wg.Go(func() { h.Disconnect(s) })
		wg.Wait()
		member := false
		h.mu.Lock()
		if r := h.rooms["r"]; r != nil {
			r.mu.Lock()
			member = r.members["s"] != nil
			r.mu.Unlock()
		}
		h.mu.Unlock()
		want := "leave s"
		if member {
			want = "join s"
		}
		p.mu.Lock()
		if n := len(p.calls); n > 0 && p.calls[n-1] != want {
			t.Fatalf("calls %v, member %v", p.calls, member)
		}
		p.mu.Unlock()
	}
}
