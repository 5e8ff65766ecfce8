package clustertest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport/redisroute"
)

// routedCluster starts one Redis and n nodes, each with a Redis broker and
// a Redis session router.
func routedCluster(t *testing.T, n int) []*clustertest.Node {
	t.Helper()
	srv := clustertest.StartRedis(t, nil)
	var nodes []*clustertest.Node
	for range n {
		b, err := redisbroker.New(&redisbroker.Options{Redis: srv.Options()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() }) // last
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rr, err := redisroute.New(ctx, b.Client(), &redisroute.Options{Node: b.Node()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rr.Close() }) // after the node's cleanup, before the broker's
		nodes = append(nodes, clustertest.StartNode(t, b, clustertest.NodeConfig{Router: rr, Rate: 1e6, Burst: 1e6}))
	}
	return nodes
}

// roundRobin sends every request to the next node in turn: a load balancer
// without stickiness.
type roundRobin struct {
	hosts []string
	next  atomic.Uint64
	base  *http.Transport
}

func newRoundRobin(nodes []*clustertest.Node) *roundRobin {
	rr := &roundRobin{base: &http.Transport{}}
	for _, n := range nodes {
		rr.hosts = append(rr.hosts, n.HTTP.Listener.Addr().String())
	}
	return rr
}

func (rr *roundRobin) RoundTrip(req *http.Request) (*http.Response, error) {
	i := rr.next.Add(1) - 1
	r := req.Clone(req.Context())
	r.URL.Host = rr.hosts[i%uint64(len(rr.hosts))]
	r.Host = r.URL.Host
	return rr.base.RoundTrip(r)
}

// wireMsg is what the tests read of a server message.
type wireMsg struct {
	T     string          `json:"t"`
	SSeq  uint64          `json:"sseq"`
	Room  string          `json:"room"`
	CID   string          `json:"cid"`
	From  string          `json:"from"`
	Data  json.RawMessage `json:"data"`
	SID   string          `json:"sid"`
	Token string          `json:"token"`
	// Ticket is in the SSE hello and ticket replies.
	Ticket string `json:"ticket"`
	Raw    string `json:"-"`
}

// httpSess is an HTTP transport client's session plumbing.
type httpSess struct {
	c          *http.Client
	base       string // "http://lb/sse" or "http://lb/longpoll"
	sid, token string
}

func (h *httpSess) post(ctx context.Context, endpoint, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/"+endpoint, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if h.sid != "" {
		req.Header.Set("Roomwire-Session", h.sid)
		req.Header.Set("Roomwire-Token", h.token)
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (h *httpSess) hello(ctx context.Context, t *testing.T) wireMsg {
	st, b, err := h.post(ctx, "hello", `{"t":"hello"}`)
	if err != nil || st != http.StatusOK {
		t.Fatalf("hello: %d %s %v", st, b, err)
	}
	var w wireMsg
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	h.sid, h.token = w.SID, w.Token
	return w
}

func parseMsg(b []byte) (wireMsg, error) {
	var m wireMsg
	err := json.Unmarshal(b, &m)
	m.Raw = string(b)
	return m, err
}

// sseRead runs an event stream, reopening it (new ticket, acknowledging
// what it has read) after every reopen events, so that the streams land on
// every node in turn.
func sseRead(ctx context.Context, h *httpSess, ticket string, reopen int, out chan<- wireMsg) error {
	var after uint64
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/events?ticket="+url.QueryEscape(ticket), nil)
		if err != nil {
			return err
		}
		resp, err := h.c.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return fmt.Errorf("events: %d %s", resp.StatusCode, b)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			if line == "" && n >= reopen {
				break
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			m, err := parseMsg([]byte(data))
			if err != nil {
				resp.Body.Close()
				return err
			}
			if m.SSeq > 0 {
				after = m.SSeq
			}
			out <- m
			n++
			if m.T == "close" {
				resp.Body.Close()
				return fmt.Errorf("stream closed: %s", m.Raw)
			}
		}
		resp.Body.Close()
		if err := ctx.Err(); err != nil {
			return err
		}
		st, b, err := h.post(ctx, "ticket", fmt.Sprintf(`{"ack":%d}`, after))
		if err != nil || st != http.StatusOK {
			return fmt.Errorf("ticket: %d %s %v", st, b, err)
		}
		var tk wireMsg
		if err := json.Unmarshal(b, &tk); err != nil {
			return err
		}
		ticket = tk.Ticket
	}
}

// lpRead polls until ctx ends, acknowledging what it has read.
func lpRead(ctx context.Context, h *httpSess, out chan<- wireMsg) error {
	var after uint64
	for {
		st, b, err := h.post(ctx, "poll", fmt.Sprintf(`{"ack":%d}`, after))
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("poll: %d %s", st, b)
		}
		var batch []json.RawMessage
		if err := json.Unmarshal(b, &batch); err != nil {
			return err
		}
		for _, raw := range batch {
			m, err := parseMsg(raw)
			if err != nil {
				return err
			}
			if m.SSeq > 0 {
				after = m.SSeq
			}
			out <- m
			if m.T == "close" {
				return fmt.Errorf("closed: %s", m.Raw)
			}
		}
	}
}

// TestHTTPSessionsRoundRobin: an SSE client and a long-polling client whose
// every request goes to the next of three nodes (no stickiness) exchange
// 1000 messages each way with a WebSocket client in the same room: every
// message arrives, in order, exactly once.
func TestHTTPSessionsRoundRobin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nodes := routedCluster(t, 3)
	rr := newRoundRobin(nodes)
	defer rr.base.CloseIdleConnections()
	hc := &http.Client{Transport: rr}
	const total = 1000

	ws := roomtest.Connect(ctx, t, nodes[0].Dialer(), "ws", nil)
	ws.Join(ctx, "x", nil)

	sse := &httpSess{c: hc, base: "http://lb/sse"}
	sseWel := sse.hello(ctx, t)
	lp := &httpSess{c: hc, base: "http://lb/longpoll"}
	lp.hello(ctx, t)
	// Each session lives on exactly one node, and stays there.
	onOneNode := func() {
		t.Helper()
		for _, h := range []*httpSess{sse, lp} {
			owners := 0
			for _, n := range nodes {
				if n.Transport.Registry().Lookup(h.sid, h.token) != nil {
					owners++
				}
			}
			if owners != 1 {
				t.Fatalf("session %s on %d nodes", h.sid, owners)
			}
		}
	}
	onOneNode()

	rctx, stopReaders := context.WithCancel(ctx)
	var readers sync.WaitGroup
	defer func() { stopReaders(); readers.Wait() }()
	sseIn, lpIn := make(chan wireMsg, 8*total), make(chan wireMsg, 8*total)
	readers.Go(func() {
		if err := sseRead(rctx, sse, sseWel.Ticket, 300, sseIn); err != nil && rctx.Err() == nil {
			t.Errorf("sse reader: %v", err)
		}
	})
	readers.Go(func() {
		if err := lpRead(rctx, lp, lpIn); err != nil && rctx.Err() == nil {
			t.Errorf("long-poll reader: %v", err)
		}
	})
	next := func(in <-chan wireMsg, what string) wireMsg {
		select {
		case m := <-in:
			return m
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
			return wireMsg{}
		}
	}
	send := func(h *httpSess, msg string) error {
		st, b, err := h.post(ctx, "send", msg)
		if err != nil || st != http.StatusNoContent {
			return fmt.Errorf("send %s: %d %s %v", msg, st, b, err)
		}
		return nil
	}
	// Join, each HTTP session through some node; the replies come on
	// the streams.
	lastSSeq := map[string]uint64{}
	checkSSeq := func(who string, m wireMsg) {
		if m.SSeq == 0 {
			return
		}
		if m.SSeq != lastSSeq[who]+1 {
			t.Fatalf("%s: sseq %d after %d (%s)", who, m.SSeq, lastSSeq[who], m.Raw)
		}
		lastSSeq[who] = m.SSeq
	}
	for _, c := range []struct {
		who string
		h   *httpSess
		in  chan wireMsg
	}{{"sse", sse, sseIn}, {"lp", lp, lpIn}} {
		if err := send(c.h, `{"t":"join","room":"x","cid":"j"}`); err != nil {
			t.Fatal(err)
		}
		for {
			m := next(c.in, c.who+" joined")
			checkSSeq(c.who, m)
			if m.T == "joined" {
				break
			}
			if m.T == "error" || m.T == "close" {
				t.Fatalf("%s: %s", c.who, m.Raw)
			}
		}
	}

	var senders sync.WaitGroup
	for _, c := range []struct {
		prefix string
		h      *httpSess
	}{{"s", sse}, {"l", lp}} {
		senders.Go(func() {
			for k := 1; k <= total; k++ {
				if err := send(c.h, fmt.Sprintf(`{"t":"pub","room":"x","cid":"%s%d","data":%d}`, c.prefix, k, k)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	senders.Go(func() {
		from := 0
		for k := 1; k <= total; k++ {
			cid := fmt.Sprintf("w%d", k)
			ws.Send(ctx, map[string]any{"t": "pub", "room": "x", "cid": cid, "data": k})
			if k%64 == 0 {
				ws.WaitFor(ctx, &from, "ok "+cid, func(m *roomtest.Msg) bool { return m.CID == cid && m.T == "ok" })
			}
		}
	})

	// verify checks one client's view: its own oks and the other two
	// clients' events, each in order and exactly once.
	sids := map[string]string{sse.sid: "s", lp.sid: "l", ws.SID: "w"}
	verify := func(who, own string, recv func() wireMsg) {
		last := map[string]int{}
		got := 0
		for got < 3*total {
			m := recv()
			var k int
			switch m.T {
			case "ok":
				if m.Room != "x" || !strings.HasPrefix(m.CID, own) {
					continue
				}
				fmt.Sscanf(m.CID[len(own):], "%d", &k)
				if k != last[own]+1 {
					t.Fatalf("%s: ok %s after %d", who, m.CID, last[own])
				}
				last[own] = k
			case "event":
				from := sids[m.From]
				if from == "" || from == own {
					t.Fatalf("%s: event from %q: %s", who, m.From, m.Raw)
				}
				if err := json.Unmarshal(m.Data, &k); err != nil || k != last[from]+1 {
					t.Fatalf("%s: event %d from %s after %d: %s", who, k, from, last[from], m.Raw)
				}
				last[from] = k
			case "error", "close":
				t.Fatalf("%s: %s", who, m.Raw)
			default:
				continue
			}
			got++
		}
	}
	verify("sse", "s", func() wireMsg { m := next(sseIn, "sse messages"); checkSSeq("sse", m); return m })
	verify("lp", "l", func() wireMsg { m := next(lpIn, "long-poll messages"); checkSSeq("lp", m); return m })
	from := 0
	verify("ws", "w", func() wireMsg {
		m := ws.WaitFor(ctx, &from, "ws messages", func(m *roomtest.Msg) bool { return true })
		w, err := parseMsg(m.Raw)
		if err != nil {
			t.Fatal(err)
		}
		return w
	})
	senders.Wait()
	if t.Failed() {
		return
	}
	onOneNode()
	total3 := 0
	for _, n := range nodes {
		total3 += n.Transport.Registry().Len()
	}
	if total3 != 3 {
		t.Fatalf("%d sessions on the nodes, want 3", total3)
	}
	// Nothing more arrives: no duplicate.
	stopReaders()
	readers.Wait()
	for _, in := range []chan wireMsg{sseIn, lpIn} {
		for len(in) > 0 {
			if m := <-in; m.T == "event" || m.T == "ok" {
				t.Fatalf("one more: %s", m.Raw)
			}
		}
	}
}

// TestForwardedWrongToken: a request for another node's session with a
// wrong token is refused with 401, and changes nothing.
func TestForwardedWrongToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := routedCluster(t, 3)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	on := func(i int, prefix string) string { return nodes[i].HTTP.URL + prefix }

	owner := &httpSess{c: hc, base: on(0, "/longpoll")}
	owner.hello(ctx, t)
	bad := &httpSess{c: hc, base: on(1, "/longpoll"), sid: owner.sid, token: owner.token + "x"}
	for _, c := range []struct{ endpoint, body string }{
		{"send", `{"t":"join","room":"y","cid":"bad"}`},
		{"poll", `{"ack":0}`},
		{"close", ``},
	} {
		st, b, err := bad.post(ctx, c.endpoint, c.body)
		if err != nil || st != http.StatusUnauthorized {
			t.Fatalf("%s with a wrong token through another node: %d %s %v", c.endpoint, st, b, err)
		}
	}
	sseBad := &httpSess{c: hc, base: on(2, "/sse"), sid: owner.sid, token: "wrong"}
	if st, b, err := sseBad.post(ctx, "ticket", ``); err != nil || st != http.StatusUnauthorized {
		t.Fatalf("ticket with a wrong token through another node: %d %s %v", st, b, err)
	}
	// A ticket naming node 0 that node 0 never issued.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, on(1, "/sse/events?ticket=")+url.QueryEscape(nodes[0].Transport.Router().Self()+".forged"), nil)
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged ticket through another node: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Nothing changed: the session is open, in no room, with nothing
	// queued; its first message is the reply to a good join sent through
	// node 2 and polled through node 1.
	good := &httpSess{c: hc, base: on(2, "/longpoll"), sid: owner.sid, token: owner.token}
	if st, b, err := good.post(ctx, "send", `{"t":"join","room":"y","cid":"good"}`); err != nil || st != http.StatusNoContent {
		t.Fatalf("good send: %d %s %v", st, b, err)
	}
	good.base = on(1, "/longpoll")
	st, b, err := good.post(ctx, "poll", `{"ack":0}`)
	if err != nil || st != http.StatusOK {
		t.Fatalf("good poll: %d %s %v", st, b, err)
	}
	var batch []wireMsg
	if err := json.Unmarshal(b, &batch); err != nil || len(batch) == 0 {
		t.Fatalf("poll: %s %v", b, err)
	}
	if m := batch[0]; m.T != "joined" || m.CID != "good" || m.SSeq != 1 {
		t.Fatalf("first message %s", b)
	}
}

// TestForwardedStreamShutdown: a stream forwarded from node 1 to the owner,
// node 0, ends when node 1 shuts down (its HTTP server does not hang on
// the forward), and a request for a session whose owner is gone is refused
// like an unknown session (401), so that the client starts over.
func TestForwardedStreamShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := routedCluster(t, 3)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	s := &httpSess{c: hc, base: nodes[0].HTTP.URL + "/sse"}
	wel := s.hello(ctx, t)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, nodes[1].HTTP.URL+"/sse/events?ticket="+url.QueryEscape(wel.Ticket), nil)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("forwarded stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	nodes[1].Stop(t)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && ctx.Err() != nil {
		t.Fatalf("the stream did not end: %v", err)
	}

	// The owner goes away: its session with it.
	nodes[0].Stop(t)
	other := &httpSess{c: hc, base: nodes[2].HTTP.URL + "/longpoll", sid: s.sid, token: s.token}
	if st, b, err := other.post(ctx, "send", `{"t":"join","room":"z","cid":"j"}`); err != nil || (st != http.StatusUnauthorized && st != http.StatusGone) {
		t.Fatalf("send for a session whose owner stopped: %d %s %v", st, b, err)
	}
}
