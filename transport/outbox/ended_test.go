package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/roomwire/roomwire/room"
)

// TestEnded: an ended session's reason is told to its token only, for the
// resume window, and for at most MaxTombstones sessions.
func TestEnded(t *testing.T) {
	reg, s := newSession(t, &Options{ResumeWindow: time.Hour})
	if _, ok := reg.Ended(s.ID(), s.Token()); ok {
		t.Fatal("a live session reported ended")
	}
	s.Close(room.ReasonSlowConsumer)
	if r, ok := reg.Ended(s.ID(), s.Token()); !ok || r != room.ReasonSlowConsumer {
		t.Fatalf("Ended: %v %v", r, ok)
	}
	if _, ok := reg.Ended(s.ID(), "wrong"); ok {
		t.Fatal("Ended answered a wrong token")
	}
	var first *Session
	for i := 0; i < MaxTombstones; i++ {
		w, err := reg.Hello(&room.Envelope{Type: room.TypeHello}, "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = w.Session
		}
		w.Session.Close(room.ReasonBye)
	}
	if _, ok := reg.Ended(s.ID(), s.Token()); ok {
		t.Fatal("more than MaxTombstones remembered")
	}
	if _, ok := reg.Ended(first.ID(), first.Token()); !ok {
		t.Fatal("a recent tombstone was forgotten")
	}

	// Past the window: forgotten.
	hub := room.NewHub(nil)
	t.Cleanup(func() { hub.Shutdown(context.Background()) })
	reg = NewRegistry(hub, &Options{ResumeWindow: time.Nanosecond})
	w, err := reg.Hello(&room.Envelope{Type: room.TypeHello}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Session.Close(room.ReasonBye)
	if _, ok := reg.Ended(w.Session.ID(), w.Session.Token()); ok {
		t.Fatal("a tombstone outlived the resume window")
	}
}
