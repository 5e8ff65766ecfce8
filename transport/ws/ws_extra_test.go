package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/roomwire/roomwire/internal/wstest"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport/ws"
)

func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or ctx ends.
func eventually(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

func TestOrigin(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	srv, _, _ := server(t, roomtest.Config{}, &ws.Options{AllowedOrigins: []string{"https://*.good.example"}})
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"", http.StatusSwitchingProtocols},
		{srv.URL, http.StatusSwitchingProtocols}, // same origin
		{"https://app.good.example", http.StatusSwitchingProtocols},
		{"https://evil.example", http.StatusForbidden},
		{"https://good.example.evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.DefaultDialer.DialContext(ctx, wsURL(srv), h)
		if resp == nil {
			t.Fatalf("origin %q: no response: %v", tc.origin, err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("origin %q: status %d, want %d", tc.origin, resp.StatusCode, tc.want)
		}
		if c != nil {
			c.Close()
		}
	}
}

func TestOversizeMessageClosesWith1009(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	srv, hub, _ := server(t, roomtest.Config{}, &ws.Options{MaxMessageBytes: 4096})
	dial := func(ctx context.Context) (roomtest.Conn, error) { return wstest.Dial(ctx, wsURL(srv)) }
	a := roomtest.Connect(ctx, t, dial, "a", nil)
	a.Join(ctx, "big", nil)
	a.Request(ctx, map[string]any{"t": "patch", "room": "big", "base": 0, "ops": json.RawMessage(`[{"op":"add","path":"/k","value":1}]`)})

	b, err := wstest.Dial(ctx, wsURL(srv))
	if err != nil {
		t.Fatal(err)
	}
	b.Send(ctx, []byte(`{"t":"hello"}`))
	b.Send(ctx, []byte(`{"t":"join","room":"big"}`))
	huge := `{"t":"patch","room":"big","base":1,"ops":[{"op":"add","path":"/x","value":"` + strings.Repeat("x", 8000) + `"}]}`
	b.Send(ctx, []byte(huge))
	var ce *roomtest.CloseError
	for {
		_, err := b.Recv(ctx)
		if err == nil {
			continue
		}
		if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("want close 1009, got %v", err)
		}
		break
	}
	doc, v, _, _ := hub.Snapshot("big")
	if string(doc) != `{"k":1}` || v != 1 {
		t.Fatalf("document changed by an oversize message: %s v%d", doc, v)
	}
	if ok := a.Request(ctx, map[string]any{"t": "pub", "room": "big", "data": 1}); ok.T != "ok" {
		t.Fatalf("other client affected: %s", ok.Raw)
	}
}

// A peer that stops answering pings is dropped within PongWait.
func TestDeadPeerDetected(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	const pongWait = 300 * time.Millisecond
	srv, _, _ := server(t, roomtest.Config{ResumeWindow: 50 * time.Millisecond}, &ws.Options{PongWait: pongWait})
	dial := func(ctx context.Context) (roomtest.Conn, error) { return wstest.Dial(ctx, wsURL(srv)) }
	a := roomtest.Connect(ctx, t, dial, "a", nil)
	a.Join(ctx, "hb", nil)

	// b says hello and joins, then never reads again: gorilla answers
	// pings only while reading, so the server hears nothing.
	b, err := wstest.Dial(ctx, wsURL(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Send(ctx, []byte(`{"t":"hello"}`))
	b.Send(ctx, []byte(`{"t":"join","room":"hb"}`))
	from := 0
	joined := a.WaitFor(ctx, &from, "b joins", func(m *roomtest.Msg) bool { return m.T == "presence" && m.Event == "join" })
	start := time.Now()
	a.WaitFor(ctx, &from, "b leaves", func(m *roomtest.Msg) bool {
		return m.T == "presence" && m.Event == "leave" && m.Member.SID == joined.Member.SID
	})
	// Bound: PongWait of silence, then the resume window.
	t.Logf("dead peer gone from the room %v after it joined (bound %v + window)", time.Since(start).Round(time.Millisecond), pongWait)
}

// 1000 connect/disconnect cycles leave no session, room or goroutine.
func TestConnectDisconnectCycles(t *testing.T) {
	ctx := deadline(t, 120*time.Second)
	srv, hub, _ := server(t, roomtest.Config{ResumeWindow: time.Millisecond}, nil)
	before := runtime.NumGoroutine()
	const cycles, parallel = 1000, 8
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	for w := 0; w < parallel; w++ {
		wg.Go(func() {
			for i := 0; i < cycles/parallel; i++ {
				c, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL(srv), nil)
				if err != nil {
					errs <- err
					return
				}
				c.WriteMessage(websocket.TextMessage, []byte(`{"t":"hello"}`))
				c.WriteMessage(websocket.TextMessage, []byte(`{"t":"join","room":"cycle"}`))
				for { // until the joined reply
					_, m, err := c.ReadMessage()
					if err != nil {
						errs <- err
						return
					}
					if strings.Contains(string(m), `"joined"`) {
						break
					}
				}
				if i%2 == 0 {
					c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					c.ReadMessage() // the server's close reply
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(ctx, t, "sessions and rooms gone", func() bool { s := hub.Stats(); return s.Sessions == 0 && s.Rooms == 0 })
	eventually(ctx, t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= before+2 })
}

// Hub.Shutdown tells every client to reconnect (4000) and returns within
// its deadline.
func TestShutdownTellsClientsToReconnect(t *testing.T) {
	ctx := deadline(t, 30*time.Second)
	srv, hub, h := server(t, roomtest.Config{}, nil)
	const n = 50
	conns := make([]*wstest.Conn, n)
	for i := range conns {
		c, err := wstest.Dial(ctx, wsURL(srv))
		if err != nil {
			t.Fatal(err)
		}
		c.Send(ctx, []byte(`{"t":"hello"}`))
		c.Send(ctx, []byte(`{"t":"join","room":"bye","cid":"j"}`))
		for {
			m, err := c.Recv(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(m), `"joined"`) {
				break
			}
		}
		conns[i] = c
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := hub.Shutdown(sctx); err != nil {
		t.Fatalf("hub shutdown: %v", err)
	}
	if err := h.Shutdown(sctx); err != nil {
		t.Fatalf("ws shutdown: %v", err)
	}
	t.Logf("shutdown of %d sessions took %v", n, time.Since(start).Round(time.Millisecond))
	for i, c := range conns {
		for {
			_, err := c.Recv(ctx)
			if err == nil {
				continue
			}
			var ce *roomtest.CloseError
			if !errors.As(err, &ce) || ce.Code != 4000 {
				t.Fatalf("client %d: want close 4000, got %v", i, err)
			}
			break
		}
		c.Close()
	}
}
