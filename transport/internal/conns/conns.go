// Package conns tracks a transport handler's live connections (streams,
// polls), so that its Shutdown can end them and wait for their goroutines:
// http.Server.Shutdown waits neither for hijacked connections nor for
// handlers that hold a request open.
//
// A Set is safe for concurrent use.
package conns

import (
	"context"
	"sync"

	"github.com/roomwire/roomwire/room"
)

// Set is a handler's live connections of type C.
type Set[C comparable] struct {
	end func(C, room.CloseReason) // must not block

	wg     sync.WaitGroup
	mu     sync.Mutex
	live   map[C]struct{}
	closed bool
}

// New returns an empty set; end tells one connection to end with a reason,
// without blocking.
func New[C comparable](end func(C, room.CloseReason)) *Set[C] {
	return &Set[C]{end: end, live: map[C]struct{}{}}
}

// Add registers c, whose goroutine must call Remove when it ends. It
// returns false once Shutdown has begun: the caller then refuses c itself.
func (s *Set[C]) Add(c C) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.live[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// Remove unregisters c.
func (s *Set[C]) Remove(c C) {
	s.mu.Lock()
	delete(s.live, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown refuses new connections, ends every live one with reason, and
// waits until all have been removed, or ctx ends.
func (s *Set[C]) Shutdown(ctx context.Context, reason room.CloseReason) error {
	s.mu.Lock()
	s.closed = true
	for c := range s.live {
		s.end(c, reason)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Quit tells one connection to end, once, with a reason: the signal a
// session or a Shutdown gives a connection's goroutines. Create it with
// NewQuit; End never blocks and is idempotent.
type Quit struct {
	once   sync.Once
	ch     chan struct{}
	reason room.CloseReason
}

// NewQuit returns a Quit not yet ended.
func NewQuit() *Quit { return &Quit{ch: make(chan struct{})} }

// End asks the connection to end with reason; later calls do nothing.
func (q *Quit) End(reason room.CloseReason) {
	q.once.Do(func() {
		q.reason = reason
		close(q.ch)
	})
}

// Ended is closed once End has been called.
func (q *Quit) Ended() <-chan struct{} { return q.ch }

// Reason is the reason End was given; valid once Ended is closed.
func (q *Quit) Reason() room.CloseReason { return q.reason }
