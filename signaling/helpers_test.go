package signaling_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/signaling"
	"github.com/roomwire/roomwire/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout is every test's deadline.
const testTimeout = 60 * time.Second

// loopbackAPI is a peer API that gathers and accepts loopback candidates
// only (no test packet leaves 127.0.0.1), with short ICE timeouts.
func loopbackAPI(t testing.TB, allowRemote func(net.IP) bool) *webrtc.API {
	if allowRemote == nil {
		allowRemote = signaling.LoopbackOnly
	}
	api, err := signaling.NewAPI(&signaling.APIOptions{
		IncludeLoopback:     true,
		AllowLocalIP:        signaling.LoopbackOnly,
		AllowRemoteIP:       allowRemote,
		DisconnectedTimeout: time.Second,
		FailedTimeout:       time.Second,
		KeepAlive:           200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// newServer starts a hub with every transport behind httptest.
func newServer(t testing.TB) *httptest.Server {
	hub := room.NewHub(&room.Options{Rate: 100000, Burst: 100000})
	rt := transport.New(hub, nil)
	srv := httptest.NewServer(rt)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		hub.Shutdown(ctx)
		rt.Shutdown(ctx)
		srv.Close()
	})
	return srv
}

// member is a room member's WebSocket session, at the protocol level: it
// acknowledges durable messages, hands signal/relay/error messages to its
// links (buffering them until a link exists), and counts what it got.
type member struct {
	t    testing.TB
	name string
	ws   *websocket.Conn
	wmu  sync.Mutex
	SID  string

	relays  atomic.Int64 // relay messages received
	signals atomic.Int64 // signal messages received

	mu    sync.Mutex
	links []*signaling.Link
	early [][]byte // link messages that arrived before any link
	other []map[string]any
	grew  chan struct{}
	done  chan struct{}
}

func connect(ctx context.Context, t testing.TB, srv *httptest.Server, name string) *member {
	t.Helper()
	c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"t":"hello","user":{"name":%q}}`, name))
	_, w, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var wel struct{ SID string }
	json.Unmarshal(w, &wel)
	m := &member{t: t, name: name, ws: c, SID: wel.SID, grew: make(chan struct{}), done: make(chan struct{})}
	go m.read()
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	m.ws.Close()
	<-m.done
}

// Send sends one client message; it is a Link's LinkOptions.Send.
func (m *member) Send(ctx context.Context, msg []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	return m.ws.WriteMessage(websocket.TextMessage, msg)
}

func (m *member) read() {
	defer close(m.done)
	for {
		_, frame, err := m.ws.ReadMessage()
		if err != nil {
			return
		}
		for line := range bytes.SplitSeq(frame, []byte{'\n'}) {
			var h struct {
				SSeq uint64 `json:"sseq"`
				T    string `json:"t"`
				CID  string `json:"cid"`
			}
			json.Unmarshal(line, &h)
			if h.SSeq > 0 {
				m.Send(context.Background(), fmt.Appendf(nil, `{"t":"ack","ack":%d}`, h.SSeq))
			}
			switch h.T {
			case "relay":
				m.relays.Add(1)
			case "signal":
				m.signals.Add(1)
			}
			if h.T == "relay" || h.T == "signal" || (h.T == "error" && strings.HasPrefix(h.CID, "lnk-")) {
				m.mu.Lock()
				links := m.links
				if len(links) == 0 {
					m.early = append(m.early, bytes.Clone(line))
				}
				m.mu.Unlock()
				for _, l := range links {
					if l.Deliver(line) {
						break
					}
				}
				continue
			}
			var msg map[string]any
			json.Unmarshal(line, &msg)
			m.mu.Lock()
			m.other = append(m.other, msg)
			close(m.grew)
			m.grew = make(chan struct{})
			m.mu.Unlock()
		}
	}
}

// link starts a link from m to peer in room and feeds it m's messages.
func (m *member) link(t testing.TB, api *webrtc.API, roomName, peer string, tweak func(*signaling.LinkOptions)) *signaling.Link {
	t.Helper()
	o := signaling.LinkOptions{Room: roomName, Self: m.SID, Peer: peer, Send: m.Send, API: api}
	if tweak != nil {
		tweak(&o)
	}
	l, err := signaling.NewLink(o)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.links = append(m.links, l)
	early := m.early
	m.early = nil
	m.mu.Unlock()
	for _, msg := range early {
		l.Deliver(msg)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// waitFor waits for a non-link message matching match.
func (m *member) waitFor(ctx context.Context, what string, match func(map[string]any) bool) map[string]any {
	m.t.Helper()
	for i := 0; ; {
		m.mu.Lock()
		for ; i < len(m.other); i++ {
			if match(m.other[i]) {
				msg := m.other[i]
				m.mu.Unlock()
				return msg
			}
		}
		grew := m.grew
		m.mu.Unlock()
		select {
		case <-grew:
		case <-m.done:
			m.t.Fatalf("%s: connection ended waiting for %s", m.name, what)
		case <-ctx.Done():
			m.t.Fatalf("%s: waiting for %s: %v", m.name, what, ctx.Err())
		}
	}
}

func (m *member) join(ctx context.Context, roomName string) {
	m.t.Helper()
	cid := m.name + "-join-" + roomName
	m.Send(ctx, fmt.Appendf(nil, `{"t":"join","room":%q,"cid":%q}`, roomName, cid))
	m.waitFor(ctx, "joined "+roomName, func(msg map[string]any) bool { return msg["t"] == "joined" && msg["cid"] == cid })
}

// pair starts a server and two members a and b in room "r".
func pair(ctx context.Context, t *testing.T) (*httptest.Server, *member, *member) {
	srv := newServer(t)
	a := connect(ctx, t, srv, "a")
	b := connect(ctx, t, srv, "b")
	a.join(ctx, "r")
	b.join(ctx, "r")
	return srv, a, b
}

// recvN receives n data messages on l and checks they are {"i":1..n} in
// order.
func recvN(ctx context.Context, t *testing.T, l *signaling.Link, n int) {
	t.Helper()
	recvRange(ctx, t, l, 1, n)
}

// recvRange receives data messages {"i":first..last} in order.
func recvRange(ctx context.Context, t *testing.T, l *signaling.Link, first, n int) {
	t.Helper()
	for i := first; i <= n; i++ {
		m, err := l.Recv(ctx)
		if err != nil {
			t.Fatalf("receiving message %d of %d: %v", i, n, err)
		}
		if m.Key != "" {
			i--
			continue
		}
		var v struct{ I int }
		if err := json.Unmarshal(m.Data, &v); err != nil || v.I != i {
			t.Fatalf("message %d: got %s", i, m.Data)
		}
	}
}

func payload(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)) }
