package outbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSession(t *testing.T, opts *Options) (*Registry, *Session) {
	t.Helper()
	hub := room.NewHub(nil)
	t.Cleanup(func() { hub.Shutdown(context.Background()) })
	reg := NewRegistry(hub, opts)
	w, err := reg.Hello(&room.Envelope{Type: room.TypeHello}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	return reg, w.Session
}

func durable(body string) *room.Message { return &room.Message{Body: []byte(body), Durable: true} }

func TestPullAckResend(t *testing.T) {
	_, s := newSession(t, nil)
	for _, b := range []string{`{"t":"a"}`, `{"t":"b"}`, `{"t":"c"}`} {
		if err := s.Send(durable(b)); err != nil {
			t.Fatal(err)
		}
	}
	items := s.Pull(nil, 0, 1<<20)
	if len(items) != 3 || string(items[0].AppendTo(nil)) != `{"sseq":1,"t":"a"}` || items[2].Seq != 3 {
		t.Fatalf("pull: %+v", items)
	}
	s.Ack(2)
	// A new connection resuming after sseq 1 gets only what is unacked
	// and after its ack: 3.
	if items := s.Pull(nil, 1, 1<<20); len(items) != 1 || items[0].Seq != 3 {
		t.Fatalf("after ack 2: %+v", items)
	}
	if items := s.Pull(nil, 3, 1<<20); len(items) != 0 {
		t.Fatalf("nothing after 3: %+v", items)
	}
}

func TestEphemeralCoalescedAndFirst(t *testing.T) {
	_, s := newSession(t, nil)
	s.Send(durable(`{"t":"d1"}`))
	for _, b := range []string{`{"x":1}`, `{"x":2}`, `{"x":3}`} {
		s.Send(&room.Message{Body: []byte(b), Key: "cursor"})
	}
	s.Send(&room.Message{Body: []byte(`{"y":1}`), Key: "typing"})
	items := s.Pull(nil, 0, 1<<20)
	var got []string
	for _, it := range items {
		got = append(got, string(it.AppendTo(nil)))
	}
	want := []string{`{"x":3}`, `{"y":1}`, `{"sseq":1,"t":"d1"}`}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	// Ephemeral values are handed out once.
	if items := s.Pull(nil, 1, 1<<20); len(items) != 0 {
		t.Fatalf("ephemeral handed out twice: %+v", items)
	}
}

func TestQueueBound(t *testing.T) {
	_, s := newSession(t, &Options{MaxQueueBytes: 100})
	s.Send(&room.Message{Body: make([]byte, 60), Key: "k"})
	if err := s.Send(durable(`{"t":"` + string(make([]byte, 50)) + `"}`)); err != nil {
		t.Fatalf("durable message within the bound once ephemeral values are dropped: %v", err)
	}
	if items := s.Pull(nil, 0, 1<<20); len(items) != 1 || items[0].Seq != 1 {
		t.Fatalf("the ephemeral value should have been dropped first: %+v", items)
	}
	if err := s.Send(durable(`{"t":"` + string(make([]byte, 50)) + `"}`)); !errors.Is(err, room.ErrSlowConsumer) {
		t.Fatalf("over the bound: %v, want ErrSlowConsumer", err)
	}
	if err := s.Send(durable(`{}`)); !errors.Is(err, room.ErrClosed) {
		t.Fatalf("after overflow: %v, want ErrClosed", err)
	}
}

func TestResumeWindow(t *testing.T) {
	reg, s := newSession(t, &Options{ResumeWindow: 50 * time.Millisecond})
	replaced := make(chan room.CloseReason, 1)
	gen, ok := s.Attach("test", func(r room.CloseReason) { replaced <- r })
	if !ok {
		t.Fatal("attach")
	}
	if _, ok := s.Attach("test2", func(room.CloseReason) {}); !ok {
		t.Fatal("second attach")
	}
	if r := <-replaced; r != room.ReasonReplaced {
		t.Fatalf("first connection closed with %v", r)
	}
	s.Detach(gen) // stale generation: no effect
	if reg.Lookup(s.ID(), s.Token()) != s {
		t.Fatal("lookup with the right token failed")
	}
	if reg.Lookup(s.ID(), "wrong") != nil {
		t.Fatal("lookup with a wrong token succeeded")
	}
	s.Detach(gen + 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("session outlived its resume window")
	}
	if s.Reason() != room.ReasonExpired || reg.Len() != 0 {
		t.Fatalf("reason %v, %d sessions left", s.Reason(), reg.Len())
	}
}
