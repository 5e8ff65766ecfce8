package client_test

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadline returns a context that ends after d or with the test.
func deadline(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// server is a hub and every transport behind httptest.
type server struct {
	hub  *room.Hub
	tr   *transport.Server
	http *httptest.Server
	once sync.Once
}

func newServer(t testing.TB, ho *room.Options, to *transport.Options) *server {
	hub := room.NewHub(ho)
	tr := transport.New(hub, to)
	s := &server{hub: hub, tr: tr, http: httptest.NewServer(tr)}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop shuts the hub down (clients are told to reconnect), then the
// transports, then the HTTP server.
func (s *server) stop(t testing.TB) {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := s.tr.Shutdown(ctx); err != nil {
			t.Errorf("transport shutdown: %v", err)
		}
		s.http.Close()
	})
}

func (s *server) addr() string { return s.http.Listener.Addr().String() }

// fastOptions reconnect quickly, for tests.
func fastOptions(user string) *client.Options {
	return &client.Options{
		Logger:     debugLogger(user),
		User:       []byte(`{"name":"` + user + `"}`),
		MinBackoff: 2 * time.Millisecond,
		MaxBackoff: 40 * time.Millisecond,
	}
}

// dial connects a client to base and closes it with the test.
func dial(ctx context.Context, t testing.TB, base string, o *client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, base, o)
	if err != nil {
		t.Fatalf("dial %s: %v", base, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func join(ctx context.Context, t testing.TB, c *client.Client, name string) *client.Room {
	t.Helper()
	r, err := c.Join(ctx, name)
	if err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	return r
}

// proxy is a userspace TCP proxy whose connections a test can cut, whose
// server-to-client (or client-to-server) direction it can hold, and which
// it can make refuse new connections, to play a failing network.
type proxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu      sync.Mutex
	backend string
	refuse  bool
	held    chan struct{} // non-nil: server-to-client bytes wait until it closes
	heldUp  chan struct{} // non-nil: client-to-server bytes wait until it closes
	conns   map[net.Conn]struct{}
	closed  bool
}

func newProxy(t testing.TB, backend string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, backend, closed := p.refuse, p.backend, p.closed
		p.mu.Unlock()
		if refuse || closed {
			cc.Close()
			continue
		}
		sc, err := net.Dial("tcp", backend)
		if err != nil {
			cc.Close()
			continue
		}
		p.mu.Lock()
		p.conns[cc], p.conns[sc] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.copy(sc, cc, &p.heldUp); p.drop(cc, sc) }()
		go func() { defer p.wg.Done(); p.copy(cc, sc, &p.held); p.drop(cc, sc) }()
	}
}

// copy copies src to dst, waiting while *hold (the direction's hold) is
// set.
func (p *proxy) copy(dst, src net.Conn, hold *chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			held := *hold
			p.mu.Unlock()
			if held != nil {
				<-held
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) drop(cc, sc net.Conn) {
	cc.Close()
	sc.Close()
	p.mu.Lock()
	delete(p.conns, cc)
	delete(p.conns, sc)
	p.mu.Unlock()
}

// cut closes every open connection abruptly (no close frame): a network
// failure as both ends see it.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN
		}
		c.Close()
	}
	for _, h := range []*chan struct{}{&p.held, &p.heldUp} {
		if *h != nil {
			close(*h) // held bytes are dropped with their connections
			*h = nil
		}
	}
}

func (p *proxy) setRefuse(v bool) {
	p.mu.Lock()
	p.refuse = v
	p.mu.Unlock()
}

func (p *proxy) setBackend(addr string) {
	p.mu.Lock()
	p.backend = addr
	p.mu.Unlock()
}

// hold stops server-to-client bytes until cut.
func (p *proxy) hold() {
	p.mu.Lock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
	p.mu.Unlock()
}

// holdUp stops client-to-server bytes until cut.
func (p *proxy) holdUp() {
	p.mu.Lock()
	if p.heldUp == nil {
		p.heldUp = make(chan struct{})
	}
	p.mu.Unlock()
}

// release lets held server-to-client bytes through.
func (p *proxy) release() {
	p.mu.Lock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// events collects a room's events in a goroutine of its own until the room
// closes.
type events struct {
	mu   sync.Mutex
	all  []client.Event
	ch   chan struct{} // closed and replaced on every event
	done chan struct{}
}

func collect(r *client.Room) *events { return collectRing(r, nil) }

// collectRing is collect that also rings b on every event.
func collectRing(r *client.Room, b *bell) *events {
	e := &events{ch: make(chan struct{}), done: make(chan struct{})}
	src := r.Events()
	go func() {
		defer close(e.done)
		for ev := range src {
			e.mu.Lock()
			e.all = append(e.all, ev)
			close(e.ch)
			e.ch = make(chan struct{})
			e.mu.Unlock()
			b.ring()
		}
	}()
	return e
}

// bell is a broadcast notification: wait returns a channel closed at the
// next ring.
type bell struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBell() *bell { return &bell{ch: make(chan struct{})} }

func (b *bell) ring() {
	if b == nil {
		return
	}
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

func (b *bell) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// wait waits until cond holds over the events so far.
func (e *events) wait(ctx context.Context, t testing.TB, what string, cond func([]client.Event) bool) {
	t.Helper()
	for {
		e.mu.Lock()
		ok, ch := cond(e.all), e.ch
		e.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

func (e *events) snapshot() []client.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]client.Event(nil), e.all...)
}

func count(evs []client.Event, kind client.EventKind) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// waitState waits until c is in state s.
func waitState(ctx context.Context, t testing.TB, c *client.Client, s client.State) {
	t.Helper()
	for st := c.State(); st != s; st = c.State() {
		if !c.WaitForStateChange(ctx, st) {
			t.Fatalf("waiting for state %v (now %v): %v", s, st, ctx.Err())
		}
	}
}

func debugLogger(name string) *slog.Logger {
	if os.Getenv("RW_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("client", name)
}
