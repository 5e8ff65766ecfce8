package room

import (
	"encoding/json"
	"sync"
)

// recorder is a Session that keeps what it is sent, up to a byte bound.
type recorder struct {
	id    string
	limit int

	mu     sync.Mutex
	msgs   []*Message
	bytes  int
	closed bool
	reason CloseReason
	done   chan struct{}
}

func newRecorder(id string, limit int) *recorder {
	return &recorder{id: id, limit: limit, done: make(chan struct{})}
}

func (s *recorder) ID() string            { return s.id }
func (s *recorder) Transport() string     { return "test" }
func (s *recorder) Done() <-chan struct{} { return s.done }

func (s *recorder) Send(m *Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.limit > 0 && s.bytes+m.Size() > s.limit {
		return ErrSlowConsumer
	}
	s.msgs = append(s.msgs, m)
	s.bytes += m.Size()
	return nil
}

func (s *recorder) Close(r CloseReason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed, s.reason = true, r
		close(s.done)
	}
}

// reset forgets what was recorded.
func (s *recorder) reset() {
	s.mu.Lock()
	s.msgs, s.bytes = nil, 0
	s.mu.Unlock()
}

// last decodes the newest message.
func (s *recorder) last() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		return nil
	}
	var m map[string]any
	json.Unmarshal(s.msgs[len(s.msgs)-1].Body, &m)
	return m
}
