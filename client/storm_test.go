package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
)

// dropListener remembers the connections it accepted, so that a test can
// break them all at once.
type dropListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	l *dropListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func (l *dropListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// dropAll resets every connection accepted so far (RST, no close frame)
// and returns how many there were.
func (l *dropListener) dropAll() int {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
	return len(conns)
}

// attempts records when connection attempts (handshakes and hellos)
// reach the server, or, through dial, when clients start them.
type attempts struct {
	mu sync.Mutex
	on bool
	at []time.Time
}

func (a *attempts) record() {
	a.mu.Lock()
	if a.on {
		a.at = append(a.at, time.Now())
	}
	a.mu.Unlock()
}

func (a *attempts) start() {
	a.mu.Lock()
	a.on = true
	a.mu.Unlock()
}

func (a *attempts) times() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at...)
}

// dial is a client's NetDialContext that records each TCP connection it
// opens.
func (a *attempts) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	a.record()
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// perSecond returns the counts per 100 ms after t0, and the highest count
// in any second.
func perSecond(times []time.Time, t0 time.Time) (buckets []int, peak int) {
	for _, at := range times {
		k := int(at.Sub(t0) / (100 * time.Millisecond))
		for len(buckets) <= k {
			buckets = append(buckets, 0)
		}
		buckets[max(k, 0)]++
	}
	for k := range buckets {
		sec := 0
		for j := k; j < min(k+10, len(buckets)); j++ {
			sec += buckets[j]
		}
		peak = max(peak, sec)
	}
	return buckets, peak
}

func (a *attempts) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ws", "/sse/hello", "/sse/ticket", "/longpoll/hello":
			a.record()
		}
		h.ServeHTTP(w, r)
	})
}

// TestReconnectStorm: 2000 clients lose their connections at once, and
// every one resumes its session.
//
// The bound: a client waits a random delay in [0, MinBackoff] (full
// jitter) before its first attempt after a drop, and a client whose attempt
// fails waits in [0, 2*MinBackoff], then [0, 4*MinBackoff], and so on. So
// N clients dropped together make their first attempts uniformly over
// MinBackoff: N/MinBackoff attempts per second, and in any one-second
// window a Binomial(N, 1s/MinBackoff) number; failed attempts come back
// spread over twice that time, so they only lower the rate. Here N = 2000
// and MinBackoff = 4 s (chosen so that this in-process server, under the
// race detector on two shared cores, mostly keeps up): 500 per second,
// standard deviation 19.4.
//
// Attempts are counted twice: as the clients open their TCP connections
// (Options.NetDialContext) and as they reach the server's handler. Both
// see an attempt later than its timer meant it, by as long as the process
// takes to get to it (under the race detector, with the 4000 sockets of the
// drop to clean up and other tests on the same cores, up to about a
// second), so a one-second window can also hold the attempts that queued
// up during the second before. The bound checked is therefore
// 2*N/MinBackoff plus 5 standard deviations = 1096 in any second, and N+5%
// attempts in all. Without jitter all 2000 would come within
// milliseconds. With the default MinBackoff (1 s) the same reasoning gives
// N per second.
func TestReconnectStorm(t *testing.T) {
	const n = 2000
	const minBackoff = 4 * time.Second
	ctx := deadline(t, 180*time.Second)
	hub := room.NewHub(nil)
	tr := transport.New(hub, &transport.Options{ResumeWindow: 60 * time.Second})
	var att, dials attempts
	hs := httptest.NewUnstartedServer(att.wrap(tr))
	ln := &dropListener{Listener: hs.Listener, conns: map[*trackedConn]struct{}{}}
	hs.Listener = ln
	hs.Start()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		hub.Shutdown(sctx)
		tr.Shutdown(sctx)
		hs.Close()
	})

	// n clients on default options, ten to a room.
	clients := make([]*client.Client, n)
	rooms := make([]*client.Room, n)
	sids := make([]string, n)
	t0 := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := client.Dial(ctx, hs.URL, &client.Options{
				User:           json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
				MinBackoff:     minBackoff,
				NetDialContext: dials.dial,
			})
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			clients[i], sids[i] = c, c.Stats().SessionID
			r, err := c.Join(ctx, fmt.Sprintf("storm-%d", i/10))
			if err != nil {
				t.Errorf("client %d: join: %v", i, err)
				return
			}
			rooms[i] = r
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				wg.Go(func() { c.Close() })
			}
		}
		wg.Wait()
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d clients connected and joined in %v", n, time.Since(t0).Round(time.Millisecond))

	att.start()
	dials.start()
	drop := time.Now()
	if got := ln.dropAll(); got < n {
		t.Fatalf("dropped %d connections, want %d", got, n)
	}
	for i, c := range clients {
		for {
			st := c.State() // before Stats: a resume changes both at once
			if c.Stats().Resumes >= 1 {
				break
			}
			if st == client.StateClosed {
				t.Fatalf("client %d closed: %v", i, c.Err())
			}
			if !c.WaitForStateChange(ctx, st) {
				t.Fatalf("client %d: no resume: %+v", i, c.Stats())
			}
		}
	}
	allBack := time.Since(drop)
	times := att.times()
	buckets, peak := perSecond(times, drop)
	dialBuckets, dialPeak := perSecond(dials.times(), drop)
	rate := float64(n) / minBackoff.Seconds() // per second
	sd := math.Sqrt(rate * (1 - 1/minBackoff.Seconds()))
	bound := int(2*rate + 5*sd)
	t.Logf("storm: %d attempts for %d clients; all resumed %v after the drop", len(times), n, allBack.Round(time.Millisecond))
	t.Logf("storm: attempts per 100 ms as the clients made them: %v", dialBuckets)
	t.Logf("storm: attempts per 100 ms as the server's handler saw them: %v", buckets)
	t.Logf("storm: peak in any second: %d as made, %d at the handler (expected N/MinBackoff = %.0f ± %.1f; bound %d)",
		dialPeak, peak, rate, sd, bound)
	if dialPeak > bound {
		t.Errorf("clients made %d attempts in one second, over the bound %d", dialPeak, bound)
	}
	if peak > bound {
		t.Errorf("the server saw %d attempts in one second, over the bound %d", peak, bound)
	}
	if len(times) > n*105/100 {
		t.Errorf("%d attempts for %d clients: too many retries", len(times), n)
	}

	// Every session resumed: same id, still in its room, and working.
	for i, c := range clients {
		if st := c.Stats(); st.SessionID != sids[i] || st.Resumes != 1 || st.Sessions != 2 {
			t.Fatalf("client %d: %+v; want session %s resumed once", i, st, sids[i])
		}
	}
	for i, r := range rooms {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.Publish(json.RawMessage(`"back"`)); err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			if err := r.Settle(ctx); err != nil {
				t.Errorf("client %d: settle: %v", i, err)
			}
			if m := r.Members(); len(m) != 10 {
				t.Errorf("client %d: %d members, want 10", i, len(m))
			}
		})
	}
	wg.Wait()
}
