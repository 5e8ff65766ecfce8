package transport_test

import (
	"context"
	"fmt"
	"github.com/roomwire/roomwire/internal/wstest"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/internal/httpclient"
)

func TestMain(m *testing.M) {
	if idleClientMain() {
		return
	}
	goleak.VerifyTestMain(m)
}

// rt is a transport.Server mounted under /rt/ of an httptest server.
type rt struct {
	srv *httptest.Server
	ts  *transport.Server
	hub *room.Hub
}

// start serves a hub's transports under /rt/. The hub's rate limit is
// raised: the tests publish thousands of messages from one session.
func start(t *testing.T, opts *transport.Options) *rt {
	hub := room.NewHub(&room.Options{Rate: 1e6, Burst: 1e6})
	ts := transport.New(hub, opts)
	mux := http.NewServeMux()
	mux.Handle("/rt/", http.StripPrefix("/rt", ts))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("transport shutdown: %v", err)
		}
		srv.Close()
	})
	return &rt{srv: srv, ts: ts, hub: hub}
}

// The dialers take the base URL of the transports ("http://host/rt").
func wsDialer(base string) roomtest.Dialer {
	return func(ctx context.Context) (roomtest.Conn, error) {
		return wstest.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws")
	}
}

func sseDialer(base string) roomtest.Dialer {
	return func(ctx context.Context) (roomtest.Conn, error) { return httpclient.NewSSE(base+"/sse", nil), nil }
}

func pollDialer(base string) roomtest.Dialer {
	return func(ctx context.Context) (roomtest.Conn, error) {
		return httpclient.NewPoll(base+"/longpoll", nil), nil
	}
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// durables waits for n durable room messages (ok or event) in room and
// returns their client ids by room seq (index 0 unused).
func durables(ctx context.Context, t *testing.T, c *roomtest.Client, roomName string, n int) []string {
	t.Helper()
	bySeq := make([]string, n+1)
	from := 0
	for got := 0; got < n; got++ {
		m := c.WaitFor(ctx, &from, fmt.Sprintf("durable message %d of %d", got+1, n), func(m *roomtest.Msg) bool {
			return m.Room == roomName && (m.T == "ok" || m.T == "event" || m.T == "error")
		})
		if m.T == "error" {
			t.Fatalf("%s", m.Raw)
		}
		s := *m.Seq
		if s < 1 || s > uint64(n) || bySeq[s] != "" {
			t.Fatalf("seq %d out of range or duplicated: %s", s, m.Raw)
		}
		bySeq[s] = m.CID
	}
	return bySeq
}

// TestOneOrderAcrossTransports: members on WebSocket, SSE and long-polling
// publish 1000 durable messages between them; each member sees every one
// exactly once, all in one order.
func TestOneOrderAcrossTransports(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	s := start(t, nil)
	base := s.srv.URL + "/rt"
	clients := []*roomtest.Client{
		roomtest.Connect(ctx, t, wsDialer(base), "ws", nil),
		roomtest.Connect(ctx, t, sseDialer(base), "sse", nil),
		roomtest.Connect(ctx, t, pollDialer(base), "longpoll", nil),
	}
	for _, c := range clients {
		c.Join(ctx, "mixed", nil)
	}
	const total = 1000
	var wg sync.WaitGroup
	for i, c := range clients {
		n := total / 3
		if i == 0 {
			n += total % 3
		}
		wg.Go(func() {
			for k := 0; k < n; k++ {
				c.Send(ctx, map[string]any{"t": "pub", "room": "mixed", "cid": c.NextCID(), "data": k})
			}
		})
	}
	wg.Wait()
	var first []string
	for i, c := range clients {
		order := durables(ctx, t, c, "mixed", total)
		if i == 0 {
			first = order
		} else if !slices.Equal(first, order) {
			t.Fatalf("the %s member saw another order than the ws member", []string{"ws", "sse", "longpoll"}[i])
		}
	}
	// Members see each other's transport.
	j := clients[0].Join(ctx, "mixed", nil)
	var ts []string
	for _, m := range j.Members {
		ts = append(ts, m.Transport)
	}
	slices.Sort(ts)
	if !slices.Equal(ts, []string{"longpoll", "sse", "ws"}) {
		t.Fatalf("member transports %v", ts)
	}
}

// TestResumeAcrossTransports: a session begun on WebSocket is cut and
// resumed on SSE, cut again and resumed on long-polling: it receives every
// message published meanwhile, with contiguous session seqs (no gap, no
// duplicate), and the others never see it leave.
func TestResumeAcrossTransports(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	s := start(t, nil)
	base := s.srv.URL + "/rt"
	a := roomtest.Connect(ctx, t, wsDialer(base), "a", nil)
	a.Join(ctx, "r", nil)
	b := roomtest.Connect(ctx, t, wsDialer(base), "b", nil)
	b.Join(ctx, "r", nil)

	var seq uint64
	publish := func(n int) {
		for i := 0; i < n; i++ {
			seq++
			a.Send(ctx, map[string]any{"t": "pub", "room": "r", "cid": a.NextCID(), "data": seq})
		}
		from := 0
		want := seq
		a.WaitFor(ctx, &from, fmt.Sprintf("ok %d", want), func(m *roomtest.Msg) bool { return m.T == "ok" && m.Seq != nil && *m.Seq == want })
	}
	// receive checks that c gets the events with room seq from..to in
	// order, and nothing else durable in between.
	receive := func(c *roomtest.Client, lo, hi uint64) {
		t.Helper()
		from := 0
		for want := lo; want <= hi; want++ {
			m := c.WaitFor(ctx, &from, fmt.Sprintf("event %d", want), func(m *roomtest.Msg) bool { return m.T == "event" })
			if *m.Seq != want {
				t.Fatalf("%s: event %d, want %d", c.Welcome.SID, *m.Seq, want)
			}
		}
	}
	publish(20)
	receive(b, 1, 20)

	b.Stop()
	publish(100) // 21..120, while b is away
	b2 := roomtest.Connect(ctx, t, sseDialer(base), "b", b)
	if !b2.Welcome.Resumed || b2.SID != b.SID {
		t.Fatalf("resume on SSE refused: %s", b2.Welcome.Raw)
	}
	receive(b2, 21, 120)
	publish(30) // 121..150, live on SSE
	receive(b2, 21, 150)

	b2.Stop()
	publish(100) // 151..250
	b3 := roomtest.Connect(ctx, t, pollDialer(base), "b", b2)
	if !b3.Welcome.Resumed || b3.SID != b.SID {
		t.Fatalf("resume on long-polling refused: %s", b3.Welcome.Raw)
	}
	receive(b3, 151, 250)
	publish(30)
	receive(b3, 151, 280)

	for _, m := range a.Messages() {
		if m.T == "presence" && m.Event == "leave" {
			t.Fatalf("a saw b leave: %s", m.Raw)
		}
	}
	// And back to WebSocket.
	b3.Stop()
	publish(10)
	b4 := roomtest.Connect(ctx, t, wsDialer(base), "b", b3)
	if !b4.Welcome.Resumed {
		t.Fatalf("resume on WebSocket refused: %s", b4.Welcome.Raw)
	}
	receive(b4, 281, 290)
}
