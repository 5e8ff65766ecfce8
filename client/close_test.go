package client_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
)

// TestShutdownReconnects: the server shuts down (close code 4000); the
// client reconnects with backoff — here to a new server behind the same
// address — gets a new session, rejoins its room, and, since the new
// server's room does not have its history, resyncs from its snapshot.
func TestShutdownReconnects(t *testing.T) { eachTransport(t, testShutdownReconnects) }

func testShutdownReconnects(t *testing.T, tr string) {
	ctx := deadline(t, 30*time.Second)
	srv1 := newServer(t, nil, nil)
	srv2 := newServer(t, nil, nil)
	px := newProxy(t, srv1.addr())
	c := dial(ctx, t, px.url(), forced("c", tr))
	r := join(ctx, t, c, "s")
	ev := collect(r)
	for i := range 3 {
		if err := r.Patch(json.RawMessage(`[{"op":"add","path":"/k","value":` + string(rune('0'+i)) + `}]`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	sid1 := c.Stats().SessionID

	px.setBackend(srv2.addr()) // new connections reach the new server
	srv1.stop(t)
	ev.wait(ctx, t, "the resync from the new server", func(all []client.Event) bool { return count(all, client.EventResync) == 1 })
	st := c.Stats()
	var ce *client.CloseError
	// Over WebSocket the last close is the server's 4000. A long-polling
	// client may instead meet the switch on another request: a poll the
	// new server does not know the session for, or a keep-alive
	// connection to the old server that ends with EOF; what matters is
	// that it reconnects and resyncs, checked below.
	if tr == client.TransportLongPoll {
		if st.LastClose == nil {
			t.Errorf("no close recorded after the shutdown")
		}
	} else if !errors.As(st.LastClose, &ce) || ce.Code != room.ReasonShutdown.Code {
		t.Errorf("last close: %v, want code %d", st.LastClose, room.ReasonShutdown.Code)
	}
	if st.SessionID == sid1 || st.Sessions != 2 || st.Drops != 1 {
		t.Errorf("stats after the shutdown: %+v", st)
	}
	if doc, v, seq := r.Confirmed(); string(doc) != `{}` || v != 0 || seq != 0 {
		t.Errorf("after resync from the new server: %s v%d seq %d", doc, v, seq)
	}
	// The client works on the new server.
	if err := r.Patch(json.RawMessage(`[{"op":"add","path":"/again","value":true}]`)); err != nil {
		t.Fatal(err)
	}
	converged(ctx, t, srv2, "s", r)
}

// TestTerminalClose: a terminal close code stops the client with an
// error; it does not reconnect.
func TestTerminalClose(t *testing.T) {
	ctx := deadline(t, 30*time.Second)
	srv := newServer(t, nil, nil)

	t.Run("4100 protocol", func(t *testing.T) {
		// User info over the server's 4 KiB limit: the server refuses the
		// hello with 4100.
		o := fastOptions("x")
		o.User = json.RawMessage(`{"big":"` + strings.Repeat("x", 5000) + `"}`)
		c, err := client.Dial(ctx, srv.http.URL, o)
		var ce *client.CloseError
		if c != nil || !errors.As(err, &ce) || ce.Code != 4100 || !ce.Terminal() {
			t.Fatalf("dial with oversize user info: %v, %v; want a terminal 4100", c, err)
		}
		// New, unlike Dial, leaves the client to report it.
		c, err = client.New(srv.http.URL, o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatal("client still running after a terminal close")
		}
		if !errors.As(c.Err(), &ce) || ce.Code != 4100 || c.State() != client.StateClosed || c.Stats().Sessions != 0 {
			t.Errorf("after 4100: err %v, state %v, stats %+v", c.Err(), c.State(), c.Stats())
		}
		if _, err := c.Join(ctx, "r"); !errors.Is(err, client.ErrClosed) {
			t.Errorf("join after a terminal close: %v", err)
		}
	})

	t.Run("401 unauthorized", func(t *testing.T) {
		auth := newServer(t, nil, &transport.Options{Authenticate: func(r *http.Request) (json.RawMessage, error) {
			if r.Header.Get("Authorization") != "Bearer good" {
				return nil, errors.New("no")
			}
			return json.RawMessage(`{"name":"authed"}`), nil
		}})
		_, err := client.Dial(ctx, auth.http.URL, fastOptions("x"))
		if !errors.Is(err, client.ErrUnauthorized) {
			t.Fatalf("dial without credentials: %v, want ErrUnauthorized", err)
		}
		o := fastOptions("x")
		o.Header = http.Header{"Authorization": {"Bearer good"}}
		c := dial(ctx, t, auth.http.URL, o)
		r := join(ctx, t, c, "r")
		if m := r.Members(); len(m) != 1 || string(m[0].User) != `{"name":"authed"}` {
			t.Errorf("members: %+v", m)
		}
	})

	for _, tc := range []struct {
		name string
		code int
		is   error
	}{
		{"4004 replaced", 4004, client.ErrReplaced},
		{"4101 unauthorized", 4101, client.ErrUnauthorized},
		{"4199 terminal", 4199, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A server that welcomes the client, then closes with the code.
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer ws.Close()
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
				ws.WriteMessage(websocket.TextMessage, []byte(`{"t":"welcome","sid":"s1","token":"t1","resumed":false,"window":30000}`))
				ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(tc.code, "bye for good"))
				ws.ReadMessage() // until the client answers or goes
			}))
			defer fake.Close()
			c, err := client.New(fake.URL, fastOptions("x"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			select {
			case <-c.Done():
			case <-ctx.Done():
				t.Fatal("client still running")
			}
			var ce *client.CloseError
			if !errors.As(c.Err(), &ce) || ce.Code != tc.code || ce.Text != "bye for good" {
				t.Errorf("err %v, want close code %d", c.Err(), tc.code)
			}
			if tc.is != nil && !errors.Is(c.Err(), tc.is) {
				t.Errorf("err %v is not %v", c.Err(), tc.is)
			}
			if st := c.Stats(); st.Sessions != 1 {
				t.Errorf("sessions %d, want 1 (no reconnect)", st.Sessions)
			}
		})
	}
}

// TestReconnectAfterDrops: a connection that breaks (1006) makes the
// client reconnect and resume, as often as it happens.
func TestReconnectAfterDrops(t *testing.T) { eachTransport(t, testReconnectAfterDrops) }

func testReconnectAfterDrops(t *testing.T, tr string) {
	ctx := deadline(t, 30*time.Second)
	srv := newServer(t, nil, nil)
	px := newProxy(t, srv.addr())
	c := dial(ctx, t, px.url(), forced("c", tr))
	r := join(ctx, t, c, "rc")
	for range 3 {
		px.cut()
		if err := r.Publish(json.RawMessage(`1`)); err != nil {
			t.Fatal(err)
		}
		if err := r.Settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if tr == client.TransportLongPoll {
		// A poll or send cut on a kept-alive connection is sent again on
		// a new one (it is idempotent), so the cut may go unnoticed.
		if st := c.Stats(); st.Drops != st.Resumes || st.Sessions != 1+st.Resumes {
			t.Errorf("stats: %+v, want every drop resumed", st)
		}
		return
	}
	if st := c.Stats(); st.Drops != 3 || st.Resumes != 3 {
		t.Errorf("stats: %+v, want 3 drops, 3 resumes", st)
	}
	var ce *client.CloseError
	if !errors.As(c.Stats().LastClose, &ce) || ce.Code != 1006 {
		t.Errorf("last close %v, want 1006", c.Stats().LastClose)
	}
}

// TestSlowConsumerRecovers: a client that cannot keep up (its server-side
// queue overflows while the network holds its bytes) is closed with 4001;
// its session is gone, so it starts a new one, rejoins with since and gets
// the rest by replay: every event exactly once, in order.
func TestSlowConsumerRecovers(t *testing.T) { eachTransport(t, testSlowConsumerRecovers) }

func testSlowConsumerRecovers(t *testing.T, tr string) {
	ctx := deadline(t, 30*time.Second)
	srv := newServer(t, nil, &transport.Options{MaxQueueBytes: 64 << 10})
	px := newProxy(t, srv.addr())
	a := dial(ctx, t, px.url(), forced("a", tr))
	b := dial(ctx, t, srv.http.URL, fastOptions("b"))
	ra, rb := join(ctx, t, a, "slow"), join(ctx, t, b, "slow")
	ea := collect(ra)
	px.hold()
	const n = 200 // 200 KB: over a's 64 KiB queue
	pad := strings.Repeat("p", 1000)
	for i := 1; i <= n; i++ {
		if err := rb.Publish(json.RawMessage(`"b` + strconv.Itoa(i) + pad + `"`)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 { // stay within b's own rate and queue limits
			if err := rb.Settle(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rb.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	px.release()
	ea.wait(ctx, t, "every event", func(all []client.Event) bool { return count(all, client.EventPublish) == n })
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, `"b`+strconv.Itoa(i)+pad+`"`)
	}
	if got := publishes(t, "a", ea.snapshot()); !equalStrings(got, want) {
		t.Errorf("a got %d events, not b1..b%d once each in order", len(got), n)
	}
	st := a.Stats()
	var ce *client.CloseError
	// The replay itself may overflow the new session's queue (the server
	// enqueues a whole replay at once), closing it with 4001 again; each
	// new session starts where the last left off, so the client gets there.
	if !errors.As(st.LastClose, &ce) || ce.Code != room.ReasonSlowConsumer.Code || st.Sessions < 2 || st.Resumes != 0 {
		t.Errorf("stats: %+v; want 4001 closes and new sessions", st)
	}
	t.Logf("sessions: %d (the first, and one per 4001 close)", st.Sessions)
}
