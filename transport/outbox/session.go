package outbox

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/roomwire/roomwire/room"
)

// Session is the logical client session shared by every transport: it
// outlives connections (resume), numbers durable messages (sseq), keeps them
// in a byte-bounded outbox until the client acknowledges them, and keeps
// ephemeral values (latest per key) beside them. It implements room.Session.
//
// One connection at a time is attached. The attached connection's writer is
// the only reader of the outbox: it waits on Wake, then calls Pull.
type Session struct {
	id    string
	token string
	// recv serialises Receive across connections: a session's messages
	// are carried out one at a time, in arrival order, even when a
	// retried HTTP send overlaps the original.
	recv sync.Mutex
	reg  *Registry
	wake chan struct{} // capacity 1: "there is something to pull"
	done chan struct{}

	mu        sync.Mutex
	transport string
	out       []outItem // durable, unacknowledged, sseq ascending
	outBytes  int
	nextSeq   uint64 // sseq of the last durable message enqueued
	eph       map[string]*room.Message
	ephKeys   []string // arrival order of eph's keys
	ephBytes  int
	conn      *attachment // nil while detached
	gen       uint64      // attachments so far
	expiry    *time.Timer // runs while detached
	closed    bool        // refuses Send (set by Close, or by an overflow)
	ending    bool        // Close has begun
	reason    room.CloseReason
}

type outItem struct {
	seq  uint64
	body []byte
}

type attachment struct {
	gen   uint64
	close func(room.CloseReason)
}

// Item is one message to write: a durable one (Seq > 0) or an ephemeral one.
type Item struct {
	Seq  uint64
	Body []byte
}

// AppendTo appends the item's wire form to dst.
func (it Item) AppendTo(dst []byte) []byte {
	if it.Seq == 0 {
		return append(dst, it.Body...)
	}
	return room.AppendFrame(dst, it.Seq, it.Body)
}

// ID implements room.Session.
func (s *Session) ID() string { return s.id }

// Token is the session's secret resume token.
func (s *Session) Token() string { return s.token }

// Transport implements room.Session.
func (s *Session) Transport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transport
}

// Done implements room.Session.
func (s *Session) Done() <-chan struct{} { return s.done }

// Wake is signalled whenever there is something new to Pull.
func (s *Session) Wake() <-chan struct{} { return s.wake }

func (s *Session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Send implements room.Session: it never blocks. Durable messages count
// against the outbox bound until acknowledged; ephemeral ones replace an
// unsent value with the same key and are dropped first when space runs out.
func (s *Session) Send(m *room.Message) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return room.ErrClosed
	}
	limit := s.reg.opts.MaxQueueBytes
	if !m.Durable {
		if old, ok := s.eph[m.Key]; ok {
			s.ephBytes -= old.Size()
		} else {
			s.ephKeys = append(s.ephKeys, m.Key)
		}
		s.eph[m.Key] = m
		s.ephBytes += m.Size()
		if s.outBytes+s.ephBytes > limit {
			s.dropEphemeral()
		}
		s.mu.Unlock()
		s.signal()
		return nil
	}
	if s.outBytes+s.ephBytes+len(m.Body) > limit {
		s.dropEphemeral() // ephemeral values go first
	}
	if s.outBytes+len(m.Body) > limit {
		// Over the bound with durable traffic alone: the client cannot
		// keep up. Refuse further messages and close, whoever the sender
		// was: Close leads to Hub.Disconnect, so never on the caller's
		// goroutine, which may hold a room lock.
		s.closed = true
		s.reason = room.ReasonSlowConsumer
		s.mu.Unlock()
		go s.Close(room.ReasonSlowConsumer)
		return room.ErrSlowConsumer
	}
	s.nextSeq++
	s.out = append(s.out, outItem{seq: s.nextSeq, body: m.Body})
	s.outBytes += len(m.Body)
	s.mu.Unlock()
	s.signal()
	return nil
}

func (s *Session) dropEphemeral() {
	clear(s.eph)
	s.ephKeys = s.ephKeys[:0]
	s.ephBytes = 0
}

// Pull appends to dst the ephemeral values waiting (first: they are never
// queued behind durable messages) and the durable messages with sseq after
// `after`, up to about maxBytes, and returns dst. Ephemeral values are
// handed out once; durable ones stay until Ack.
func (s *Session) Pull(dst []Item, after uint64, maxBytes int) []Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.ephKeys {
		m := s.eph[k]
		dst = append(dst, Item{Body: m.Body})
		n += len(m.Body)
	}
	s.dropEphemeral()
	i := s.indexAfter(after)
	for ; i < len(s.out) && (n < maxBytes || n == 0); i++ {
		dst = append(dst, Item{Seq: s.out[i].seq, Body: s.out[i].body})
		n += len(s.out[i].body)
	}
	if i < len(s.out) {
		s.signal() // more to pull
	}
	return dst
}

// indexAfter returns the index of the first outbox item with seq > after.
func (s *Session) indexAfter(after uint64) int {
	if len(s.out) == 0 || after < s.out[0].seq {
		return 0
	}
	i := int(after - s.out[0].seq + 1)
	return min(i, len(s.out))
}

// Ack drops every durable message up to and including seq (at most the
// newest one enqueued).
func (s *Session) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq = min(seq, s.nextSeq)
	i := s.indexAfter(seq)
	for _, it := range s.out[:i] {
		s.outBytes -= len(it.body)
	}
	clear(s.out[:i])
	s.out = s.out[i:]
}

// Last returns the sseq of the newest durable message enqueued.
func (s *Session) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq
}

// Attach makes a new connection of the given transport current: the
// previous one, if any, is closed with ReasonReplaced. closeFn must not
// block; it is how the session tells the connection to end. Attach returns
// the attachment's generation, for Detach, and false if the session has
// ended.
func (s *Session) Attach(transport string, closeFn func(room.CloseReason)) (uint64, bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, false
	}
	prev := s.conn
	s.gen++
	s.conn = &attachment{gen: s.gen, close: closeFn}
	s.transport = transport
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	gen := s.gen
	s.mu.Unlock()
	if prev != nil {
		prev.close(room.ReasonReplaced)
	}
	s.signal()
	return gen, true
}

// Detach ends attachment gen (if still current) and starts the resume
// window: unless a connection attaches within it, the session ends with
// ReasonExpired and leaves its rooms.
func (s *Session) Detach(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.conn == nil || s.conn.gen != gen {
		return
	}
	s.conn = nil
	s.expiry = time.AfterFunc(s.reg.opts.ResumeWindow, func() { s.expire(gen) })
}

func (s *Session) expire(gen uint64) {
	s.mu.Lock()
	stale := s.conn != nil || s.gen != gen
	s.mu.Unlock()
	if !stale {
		s.Close(room.ReasonExpired)
	}
}

// Close implements room.Session: the attached connection (if any) is told
// to end with reason, the session leaves its rooms and is forgotten.
func (s *Session) Close(reason room.CloseReason) {
	s.mu.Lock()
	if s.ending {
		s.mu.Unlock()
		return
	}
	s.ending = true
	if s.reason.Code == 0 { // Send may have set ReasonSlowConsumer
		s.reason = reason
	}
	s.closed = true
	conn := s.conn
	s.conn = nil
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	s.out, s.outBytes = nil, 0
	s.dropEphemeral()
	reason = s.reason
	s.mu.Unlock()
	if conn != nil {
		conn.close(reason)
	}
	s.reg.bury(s, reason) // before forget: Lookup or Ended finds it throughout
	s.reg.forget(s)
	if d := s.reg.opts.Directory; d != nil {
		d.Ended(s.id)
	}
	s.reg.hub.Disconnect(s)
	close(s.done) // last: Done means the registry and the hub have let go
}

// Reason returns why the session ended (zero while it is open).
func (s *Session) Reason() room.CloseReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Receive carries out what a client sent: one message, or several separated
// by '\n'. Acks and bye are the session's own; every other message goes to
// the hub. A message that does not parse gets an error reply and changes
// nothing. Calls are carried out one at a time per session, whichever
// connection they come from.
func (s *Session) Receive(ctx context.Context, raw []byte) {
	s.recv.Lock()
	defer s.recv.Unlock()
	for line := range bytes.SplitSeq(raw, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, err := room.ParseEnvelope(line)
		switch {
		case err != nil:
			s.Send(room.ErrorMessage("", err))
		case e.Type == room.TypeAck:
			s.Ack(e.Ack)
		case e.Type == room.TypeBye:
			s.Close(room.ReasonBye)
			return
		case e.Type == room.TypeHello:
			s.Send(room.ErrorMessage(e.CID, fmt.Errorf("%w: hello is only the first message of a connection", room.ErrBadRequest)))
		default:
			s.reg.hub.Handle(ctx, s, e)
		}
	}
}
