package ws_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/outbox"
	"github.com/roomwire/roomwire/transport/ws"
)

// The end-to-end benchmarks: one publisher, benchMembers receivers on
// loopback, at most benchWindow messages in flight. One op is one message
// delivered to every receiver. BenchmarkRawGorillaHub is the baseline: the
// gorilla chat-example hub (broadcast the bytes to every connection, one
// writer per connection, queued messages batched into one frame), with no
// rooms, order, acks or resume.
const (
	benchMembers = 50
	benchWindow  = 64
)

var benchPayload = []byte(`{"text":"the quick brown fox jumps over the lazy dog","n":12345}`)

func BenchmarkRoomwireWS(b *testing.B) {
	hub := room.NewHub(&room.Options{Rate: 1e9, Burst: 1e9})
	reg := outbox.NewRegistry(hub, nil)
	h := ws.NewHandler(reg, nil)
	srv := httptest.NewServer(h)
	defer func() {
		hub.Shutdown(context.Background())
		h.Shutdown(context.Background())
		srv.Close()
	}()
	url := "ws" + srv.URL[len("http"):]
	dial := func() *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		c.WriteMessage(websocket.TextMessage, []byte(`{"t":"hello"}`))
		c.WriteMessage(websocket.TextMessage, []byte(`{"t":"join","room":"bench"}`))
		return c
	}
	received := newProgress()
	var wg sync.WaitGroup
	readers := make([]*websocket.Conn, benchMembers)
	for i := range readers {
		readers[i] = dial()
		wg.Go(func() { readAck(readers[i], new(sync.Mutex), received, []byte(`"t":"event"`)) })
	}
	pub := dial()
	var pubMu sync.Mutex
	wg.Go(func() { readAck(pub, &pubMu, nil, nil) })
	msg := []byte(`{"t":"pub","room":"bench","data":` + string(benchPayload) + `}`)
	// Wait until everyone has joined: one message through.
	pubMu.Lock()
	pub.WriteMessage(websocket.TextMessage, msg)
	pubMu.Unlock()
	received.waitFor(b, benchMembers)
	received.reset()

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		received.waitFor(b, int64(i-benchWindow)*benchMembers)
		pubMu.Lock()
		pub.WriteMessage(websocket.TextMessage, msg)
		pubMu.Unlock()
	}
	received.waitFor(b, int64(b.N)*benchMembers)
	b.StopTimer()
	for _, c := range append(readers, pub) {
		c.Close()
	}
	wg.Wait()
}

// readAck reads frames until the connection ends, counting messages that
// contain match, acknowledging durable ones as a roomwire client must.
func readAck(c *websocket.Conn, wmu *sync.Mutex, n *progress, match []byte) {
	for {
		_, frame, err := c.ReadMessage()
		if err != nil {
			return
		}
		var last []byte
		for line := range bytes.SplitSeq(frame, []byte{'\n'}) {
			if match != nil && bytes.Contains(line, match) {
				if n != nil {
					n.add(1)
				}
			}
			if bytes.HasPrefix(line, []byte(`{"sseq":`)) {
				last = line[len(`{"sseq":`):bytes.IndexByte(line, ',')]
			}
		}
		if last != nil {
			wmu.Lock()
			c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"t":"ack","ack":%s}`, last))
			wmu.Unlock()
		}
	}
}

// progress counts deliveries; waitFor blocks until a count is reached.
type progress struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int64
}

func newProgress() *progress {
	p := &progress{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *progress) add(k int64) {
	p.mu.Lock()
	p.n += k
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *progress) reset() {
	p.mu.Lock()
	p.n = 0
	p.mu.Unlock()
}

// waitFor blocks until the count reaches want; a stuck run fails after a
// minute instead of hanging.
func (p *progress) waitFor(b *testing.B, want int64) {
	stuck := time.AfterFunc(time.Minute, func() { p.cond.Broadcast() })
	defer stuck.Stop()
	start := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.n < want {
		if time.Since(start) > time.Minute {
			b.Fatalf("stuck at %d of %d deliveries", p.n, want)
		}
		p.cond.Wait()
	}
}

func BenchmarkRawGorillaHub(b *testing.B) {
	hub := newRawHub()
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.close()
	url := "ws" + srv.URL[len("http"):]
	dial := func() *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	received := newProgress()
	var wg sync.WaitGroup
	readers := make([]*websocket.Conn, benchMembers)
	for i := range readers {
		readers[i] = dial()
		wg.Go(func() { readAck(readers[i], new(sync.Mutex), received, []byte(`"text"`)) })
	}
	pub := dial()
	var pubMu sync.Mutex
	wg.Go(func() { readAck(pub, &pubMu, nil, nil) })
	hub.waitConns(benchMembers + 1)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		received.waitFor(b, int64(i-benchWindow)*benchMembers)
		pubMu.Lock()
		pub.WriteMessage(websocket.TextMessage, benchPayload)
		pubMu.Unlock()
	}
	received.waitFor(b, int64(b.N)*benchMembers)
	b.StopTimer()
	for _, c := range append(readers, pub) {
		c.Close()
	}
	wg.Wait()
}

// rawHub is the baseline: gorilla's chat example reduced to its core.
type rawHub struct {
	up    websocket.Upgrader
	mu    sync.Mutex
	conns map[*websocket.Conn]chan []byte
	wg    sync.WaitGroup
	grew  chan struct{}
}

func newRawHub() *rawHub {
	return &rawHub{conns: map[*websocket.Conn]chan []byte{}, grew: make(chan struct{}, 1024)}
}

func (h *rawHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	send := make(chan []byte, 1024)
	h.mu.Lock()
	h.conns[c] = send
	h.mu.Unlock()
	h.grew <- struct{}{}
	h.wg.Go(func() {
		// As the chat example's writePump: everything queued goes into
		// one frame, separated by newlines.
		for m := range send {
			w, err := c.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(m)
			for n := len(send); n > 0; n-- {
				w.Write([]byte{'\n'})
				w.Write(<-send)
			}
			if w.Close() != nil {
				return
			}
		}
	})
	for {
		_, m, err := c.ReadMessage()
		if err != nil {
			break
		}
		h.mu.Lock()
		for _, s := range h.conns {
			select {
			case s <- m:
			default: // drop, as the chat example does for a full queue
			}
		}
		h.mu.Unlock()
	}
	h.mu.Lock()
	delete(h.conns, c)
	close(send)
	h.mu.Unlock()
	c.Close()
}

func (h *rawHub) waitConns(n int) {
	for range n {
		<-h.grew
	}
}

func (h *rawHub) close() { h.wg.Wait() }
