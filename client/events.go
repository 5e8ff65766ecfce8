package client

import (
	"encoding/json"

	"github.com/roomwire/roomwire/room"
)

// Member is a session as the members of a room see it.
type Member = room.Member

// EventKind says what an Event reports.
type EventKind int

// The event kinds.
const (
	// EventPatch: another member's patch was applied to the confirmed
	// document (From, CID, Seq, Version, Ops). Also reported for one of
	// this client's own patches that it had been told was rejected, when
	// a re-sent copy was applied after all (see Room.Patch).
	EventPatch EventKind = iota + 1
	// EventPublish: another member published an event (From, CID, Seq,
	// Version, Data).
	EventPublish
	// EventMemberJoin and EventMemberLeave: presence (Member).
	EventMemberJoin
	EventMemberLeave
	// EventEphemeral: another member's latest ephemeral value (From,
	// Key, Data). Latest value wins: an undelivered older value for the
	// same sender and key is replaced, and ephemeral events are handed
	// out before the durable ones waiting.
	EventEphemeral
	// EventRejected: the server refused one of this client's patches or
	// publishes (CID, and Ops or Data; Err is a *ServerError). A refused
	// patch is gone from the local view.
	EventRejected
	// EventResync: the confirmed document was replaced by the server's
	// snapshot (Seq, Version), because the room log no longer reached
	// back to the last seq this client had applied. Pending patches have
	// been rebased on it. Events in between are not reported.
	EventResync
	// EventOverflow: the application fell more than Options.EventBuffer
	// durable events behind; Lost events were discarded here. The room's
	// state (Doc, Members) is still exact.
	EventOverflow
)

func (k EventKind) String() string {
	switch k {
	case EventPatch:
		return "patch"
	case EventPublish:
		return "publish"
	case EventMemberJoin:
		return "member-join"
	case EventMemberLeave:
		return "member-leave"
	case EventEphemeral:
		return "ephemeral"
	case EventRejected:
		return "rejected"
	case EventResync:
		return "resync"
	case EventOverflow:
		return "overflow"
	}
	return "EventKind(?)"
}

// Event is one thing that happened in a room. Which fields are set depends
// on Kind. Treat Ops and Data as read-only.
type Event struct {
	Kind    EventKind
	Room    string
	Seq     uint64 // room seq of a durable entry
	Version uint64 // document version after it
	From    string // sender's session id
	CID     string // sender's client message id
	Ops     json.RawMessage
	Data    json.RawMessage
	Key     string
	Member  Member
	Err     error
	Lost    int
}

type valueKey struct{ from, key string }

// mailbox holds a room's undelivered events; a pump goroutine hands them to
// the application. All fields are guarded by the client's mutex.
type mailbox struct {
	on       bool          // keep events (always, but in tests)
	ch       chan Event    // made by the first Events call
	sig      chan struct{} // capacity 1: there is something to pop
	q        []Event       // durable events, oldest first
	lost     int           // discarded since the last overflow marker
	eph      map[valueKey]Event
	ephOrder []valueKey
}

// push queues ev without ever blocking. Called with the client's mutex held.
func (b *mailbox) push(ev Event, max int) {
	if !b.on {
		return
	}
	if ev.Kind == EventEphemeral {
		k := valueKey{ev.From, ev.Key}
		if _, ok := b.eph[k]; !ok {
			b.ephOrder = append(b.ephOrder, k)
		}
		b.eph[k] = ev
	} else {
		if len(b.q) >= max {
			b.lost++
			return
		}
		if b.lost > 0 {
			b.q = append(b.q, Event{Kind: EventOverflow, Room: ev.Room, Lost: b.lost})
			b.lost = 0
		}
		b.q = append(b.q, ev)
	}
	select {
	case b.sig <- struct{}{}:
	default:
	}
}

// forget drops the undelivered ephemeral values of a member that left.
func (b *mailbox) forget(from string) {
	if !b.on {
		return
	}
	keep := b.ephOrder[:0]
	for _, k := range b.ephOrder {
		if k.from == from {
			delete(b.eph, k)
		} else {
			keep = append(keep, k)
		}
	}
	b.ephOrder = keep
}

// pop takes the next event: ephemeral values first, then durable events,
// then an overflow marker. Called with the client's mutex held.
func (b *mailbox) pop(room string) (Event, bool) {
	if len(b.ephOrder) > 0 {
		k := b.ephOrder[0]
		b.ephOrder = b.ephOrder[1:]
		ev := b.eph[k]
		delete(b.eph, k)
		return ev, true
	}
	if len(b.q) > 0 {
		ev := b.q[0]
		b.q[0] = Event{}
		b.q = b.q[1:]
		if len(b.q) == 0 {
			b.q = nil
		}
		return ev, true
	}
	if b.lost > 0 {
		ev := Event{Kind: EventOverflow, Room: room, Lost: b.lost}
		b.lost = 0
		return ev, true
	}
	return Event{}, false
}

// pump hands r's events to the application, one at a time, until the room
// closes; then it closes the channel.
func (r *Room) pump() {
	defer r.c.wg.Done()
	defer close(r.box.ch)
	for {
		r.c.mu.Lock()
		ev, ok := r.box.pop(r.name)
		r.c.mu.Unlock()
		if !ok {
			select {
			case <-r.box.sig:
				continue
			case <-r.done:
				return
			}
		}
		select {
		case r.box.ch <- ev:
		case <-r.done:
			return
		}
	}
}
