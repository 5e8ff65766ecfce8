package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/longpoll"
)

// sseqWatch records the session seqs a client receives.
type sseqWatch struct {
	mu      sync.Mutex
	applied []uint64
	dups    int
}

func watchSSeq(c *client.Client) *sseqWatch {
	w := &sseqWatch{}
	client.SetSSeqTrace(c, func(s uint64, dup bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if dup {
			w.dups++
		} else {
			w.applied = append(w.applied, s)
		}
	})
	return w
}

// check fails unless the session seqs applied are 1, 2, ... n, each once.
func (w *sseqWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, s := range w.applied {
		if s != uint64(i+1) {
			t.Fatalf("session seq %d applied in position %d: a gap or a repeat", s, i+1)
		}
	}
	t.Logf("session seqs 1..%d applied once each, in order (%d duplicates delivered and ignored)", len(w.applied), w.dups)
}

// publisher publishes 0, 1, 2, ... into a room, every few milliseconds,
// until stopped.
type publisher struct {
	r    *client.Room
	stop chan struct{}
	done chan struct{}
	n    int
}

func startPublisher(t *testing.T, r *client.Room) *publisher {
	p := &publisher{r: r, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if err := r.Publish(json.RawMessage(strconv.Itoa(p.n))); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			p.n++
		}
	}()
	return p
}

// end stops publishing and returns how many were published.
func (p *publisher) end() int {
	close(p.stop)
	<-p.done
	return p.n
}

// contiguous checks that evs hold the publications first..last, each
// once, in order, with room seqs that follow one another.
func contiguous(t *testing.T, evs []client.Event, last int) {
	t.Helper()
	var prevSeq uint64
	prev := -1
	for _, ev := range evs {
		if ev.Kind != client.EventPublish {
			continue
		}
		v, err := strconv.Atoi(string(ev.Data))
		if err != nil {
			t.Fatalf("event data %s", ev.Data)
		}
		if prev >= 0 && (v != prev+1 || ev.Seq != prevSeq+1) {
			t.Fatalf("publication %d (seq %d) after %d (seq %d): a gap or a duplicate", v, ev.Seq, prev, prevSeq)
		}
		prev, prevSeq = v, ev.Seq
	}
	if prev != last {
		t.Fatalf("last publication received %d, want %d", prev, last)
	}
}

// proxied is a client behind nginx in some mode, and the room it watches
// while another member publishes into it.
type proxied struct {
	c     *client.Client
	r     *client.Room
	ev    *events
	sseq  *sseqWatch
	pub   *publisher
	since time.Duration // from New to connected
}

func connectProxied(ctx context.Context, t *testing.T, srv *server, base string, o *client.Options) *proxied {
	t.Helper()
	p := &proxied{}
	t0 := time.Now()
	c, err := client.New(base, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	p.since = time.Since(t0)
	p.c = c
	p.sseq = watchSSeq(c)
	pc := dial(ctx, t, srv.http.URL, fastOptions("publisher"))
	rp := join(ctx, t, pc, "u")
	p.r = join(ctx, t, c, "u")
	p.ev = collect(p.r)
	p.pub = startPublisher(t, rp)
	t.Cleanup(func() {
		select {
		case <-p.pub.stop:
		default:
			p.pub.end()
		}
	})
	return p
}

// waitUpgrade waits (on the publications' rhythm) until the client is on
// transport tr after `upgrades` upgrades, then for 20 more publications.
func (p *proxied) waitUpgrade(ctx context.Context, t *testing.T, tr string, upgrades int) time.Duration {
	t.Helper()
	t0 := time.Now()
	p.ev.wait(ctx, t, "the upgrade to "+tr, func([]client.Event) bool {
		st := p.c.Stats()
		return st.Transport == tr && st.Upgrades == upgrades
	})
	took := time.Since(t0)
	n := count(p.ev.snapshot(), client.EventPublish)
	p.ev.wait(ctx, t, "publications after the upgrade", func(all []client.Event) bool { return count(all, client.EventPublish) >= n+20 })
	return took
}

// finish stops the publisher and checks that the client got everything,
// once, in order, and never dropped its connection or its session.
func (p *proxied) finish(ctx context.Context, t *testing.T, srv *server, upgrades int) {
	t.Helper()
	n := p.pub.end()
	_, _, seq, _ := srv.hub.Snapshot("u")
	if err := p.r.WaitSeq(ctx, seq); err != nil {
		t.Fatal(err)
	}
	p.ev.wait(ctx, t, "every publication", func(all []client.Event) bool { return count(all, client.EventPublish) > 0 })
	contiguous(t, p.ev.snapshot(), n-1)
	p.sseq.check(t)
	if st := p.c.Stats(); st.Drops != 0 || st.Sessions != 1 || st.Upgrades != upgrades {
		t.Fatalf("stats %+v: want no drop, one session, %d upgrades", st, upgrades)
	}
}

// TestFallbackAndUpgrade: the client picks the best transport a proxy
// lets through, and moves up when the proxy is fixed, without a gap or a
// duplicate in session or room seqs.
func TestFallbackAndUpgrade(t *testing.T) {
	opts := func(name string) *client.Options {
		return &client.Options{
			Logger:          debugLogger(name),
			UpgradeInterval: 200 * time.Millisecond,
			MinBackoff:      50 * time.Millisecond,
			MaxBackoff:      time.Second,
		}
	}
	newSrv := func(t *testing.T) *server {
		return newServer(t, nil, &transport.Options{LongPoll: longpoll.Options{Hold: 5 * time.Second}})
	}

	t.Run("direct", func(t *testing.T) {
		ctx := deadline(t, 30*time.Second)
		srv := newSrv(t)
		ngx := startNginx(ctx, t, srv.addr(), "normal")
		for _, base := range []string{srv.http.URL, ngx.url} {
			c := dial(ctx, t, base, opts("direct"))
			if st := c.Stats(); st.Transport != client.TransportWS {
				t.Errorf("%s: connected over %s, want WebSocket", base, st.Transport)
			}
			c.Close()
		}
	})

	t.Run("no upgrade", func(t *testing.T) {
		ctx := deadline(t, 60*time.Second)
		srv := newSrv(t)
		ngx := startNginx(ctx, t, srv.addr(), "noupgrade")
		p := connectProxied(ctx, t, srv, ngx.url, opts("noupgrade"))
		if st := p.c.Stats(); st.Transport != client.TransportSSE || p.since > 3*time.Second {
			t.Fatalf("behind a proxy without Upgrade: %s after %v, want SSE within 3 s", st.Transport, p.since)
		}
		t.Logf("behind nginx without Upgrade: connected over SSE %v after the first attempt", p.since.Round(time.Millisecond))
		p.ev.wait(ctx, t, "publications over SSE", func(all []client.Event) bool { return count(all, client.EventPublish) >= 20 })

		ngx.reload(ctx, "normal")
		took := p.waitUpgrade(ctx, t, client.TransportWS, 1)
		t.Logf("nginx fixed: upgraded to WebSocket %v after the reload", took.Round(time.Millisecond))
		p.finish(ctx, t, srv, 1)
	})

	t.Run("buffering", func(t *testing.T) {
		ctx := deadline(t, 90*time.Second)
		srv := newSrv(t)
		ngx := startNginx(ctx, t, srv.addr(), "buffered")
		o := opts("buffered")
		p := connectProxied(ctx, t, srv, ngx.url, o)
		probe := 2 * time.Second // the default ProbeTimeout
		if st := p.c.Stats(); st.Transport != client.TransportLongPoll || p.since > probe+time.Second {
			t.Fatalf("behind a buffering proxy: %s after %v, want long-polling within the probe timeout (%v) and a second", st.Transport, p.since, probe)
		}
		t.Logf("behind nginx buffering SSE: connected over long-polling %v after the first attempt (probe timeout %v)", p.since.Round(time.Millisecond), probe)
		p.ev.wait(ctx, t, "publications over long-polling", func(all []client.Event) bool { return count(all, client.EventPublish) >= 20 })

		ngx.reload(ctx, "noupgrade")
		took := p.waitUpgrade(ctx, t, client.TransportSSE, 1)
		t.Logf("nginx stops buffering: upgraded to SSE %v after the reload", took.Round(time.Millisecond))
		ngx.reload(ctx, "normal")
		took = p.waitUpgrade(ctx, t, client.TransportWS, 2)
		t.Logf("nginx passes WebSocket: upgraded to WebSocket %v after the reload", took.Round(time.Millisecond))
		p.finish(ctx, t, srv, 2)
	})
}

// gate is a server front that plays the proxies of TestFallbackAndUpgrade
// in process: it refuses WebSocket handshakes (400, as a proxy that strips
// Upgrade makes the server answer) and holds back event streams (it
// swallows their flushes, so that they leave the server only when its 4 KiB
// buffer fills), while the test says so. A stream opened while buffering
// stays buffered, as an open response through a proxy would.
type gate struct {
	h      http.Handler
	mu     sync.Mutex
	noWS   bool
	buffer bool
}

func (g *gate) set(noWS, buffer bool) {
	g.mu.Lock()
	g.noWS, g.buffer = noWS, buffer
	g.mu.Unlock()
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	noWS, buffer := g.noWS, g.buffer
	g.mu.Unlock()
	switch {
	case noWS && r.URL.Path == "/ws":
		http.Error(w, "no WebSocket through here", http.StatusBadRequest)
		return
	case buffer && r.URL.Path == "/sse/events":
		w = heldWriter{w}
	}
	g.h.ServeHTTP(w, r)
}

// heldWriter swallows flushes.
type heldWriter struct{ http.ResponseWriter }

func (w heldWriter) FlushError() error           { return nil }
func (w heldWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestUpgradeInProcess is TestFallbackAndUpgrade's buffering case without
// nginx: long-polling first, then SSE, then WebSocket, no gap, no
// duplicate, no drop.
func TestUpgradeInProcess(t *testing.T) {
	ctx := deadline(t, 60*time.Second)
	hub := room.NewHub(nil)
	tr := transport.New(hub, &transport.Options{LongPoll: longpoll.Options{Hold: 5 * time.Second}})
	g := &gate{h: tr, noWS: true, buffer: true}
	srv := &server{hub: hub, tr: tr, http: httptest.NewServer(g)}
	t.Cleanup(func() { srv.stop(t) })

	o := &client.Options{
		Logger:          debugLogger("gated"),
		UpgradeInterval: 100 * time.Millisecond,
		ProbeTimeout:    500 * time.Millisecond,
		MinBackoff:      50 * time.Millisecond,
		MaxBackoff:      time.Second,
	}
	p := connectProxied(ctx, t, srv, srv.http.URL, o)
	if st := p.c.Stats(); st.Transport != client.TransportLongPoll || p.since > o.ProbeTimeout+time.Second {
		t.Fatalf("behind a buffering front: %s after %v, want long-polling after the probe timeout (%v)", st.Transport, p.since, o.ProbeTimeout)
	}
	t.Logf("buffered streams: on long-polling %v after the first attempt (probe timeout %v)", p.since.Round(time.Millisecond), o.ProbeTimeout)
	p.ev.wait(ctx, t, "publications over long-polling", func(all []client.Event) bool { return count(all, client.EventPublish) >= 20 })
	g.set(true, false)
	took := p.waitUpgrade(ctx, t, client.TransportSSE, 1)
	t.Logf("streams flow: upgraded to SSE in %v", took.Round(time.Millisecond))
	g.set(false, false)
	took = p.waitUpgrade(ctx, t, client.TransportWS, 2)
	t.Logf("WebSocket passes: upgraded to WebSocket in %v", took.Round(time.Millisecond))
	p.finish(ctx, t, srv, 2)
}
