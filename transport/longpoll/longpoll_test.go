package longpoll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport/internal/httpclient"
	"github.com/roomwire/roomwire/transport/longpoll"
	"github.com/roomwire/roomwire/transport/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server starts a hub and a long-polling handler behind httptest; the endpoints
// are under srv.URL+"/longpoll".
func server(t *testing.T, cfg roomtest.Config, opts *longpoll.Options) (*httptest.Server, *outbox.Registry) {
	srv, reg, _ := serverHeld(t, cfg, opts)
	return srv, reg
}

// serverHeld is server, with a channel that receives (without blocking the
// server: it has room for 1024) each time a poll is held.
func serverHeld(t *testing.T, cfg roomtest.Config, opts *longpoll.Options) (*httptest.Server, *outbox.Registry, <-chan struct{}) {
	hub := room.NewHub(&room.Options{Log: room.LogLimits{MaxEntries: cfg.LogEntries}})
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: cfg.ResumeWindow, MaxQueueBytes: cfg.MaxQueueBytes})
	h := longpoll.NewHandler(reg, opts)
	held := make(chan struct{}, 1024)
	longpoll.OnHeld(h, func() {
		select {
		case held <- struct{}{}:
		default:
		}
	})
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), roomtest.Timeout)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("longpoll shutdown: %v", err)
		}
		srv.Close()
	})
	return srv, reg, held
}

func factory(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
	srv, _ := server(t, cfg, nil)
	return func(ctx context.Context) (roomtest.Conn, error) {
		return httpclient.NewPoll(srv.URL+"/longpoll", nil), nil
	}
}

func TestConformance(t *testing.T) { roomtest.Run(t, factory) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawPoll is one poll by hand: it returns the status and the decoded batch.
func rawPoll(ctx context.Context, t *testing.T, hc *http.Client, url, sid, token string, ack uint64, hdr map[string]string) (int, []json.RawMessage) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/longpoll/poll", strings.NewReader(fmt.Sprintf(`{"ack":%d}`, ack)))
	req.Header.Set(httpclient.HeaderSession, sid)
	req.Header.Set(httpclient.HeaderToken, token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var batch []json.RawMessage
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatalf("poll answer %q: %v", b, err)
		}
	}
	return resp.StatusCode, batch
}

type welcome struct{ SID, Token string }

func hello(ctx context.Context, t *testing.T, hc *http.Client, url string) welcome {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/longpoll/hello", strings.NewReader(`{"t":"hello"}`))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	defer resp.Body.Close()
	var w welcome
	if err := json.NewDecoder(resp.Body).Decode(&w); err != nil || resp.StatusCode != 200 || w.Token == "" {
		t.Fatalf("hello: %d %v", resp.StatusCode, err)
	}
	return w
}

func post(ctx context.Context, t *testing.T, hc *http.Client, url, endpoint string, w welcome, body string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/longpoll/"+endpoint, strings.NewReader(body))
	req.Header.Set(httpclient.HeaderSession, w.SID)
	req.Header.Set(httpclient.HeaderToken, w.Token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func isClose(m json.RawMessage, code int) bool {
	return strings.HasPrefix(string(m), fmt.Sprintf(`{"t":"close","code":%d,`, code))
}

// TestHold: an idle poll is held for Hold and answers an empty batch; a
// held poll answers as soon as there is a message; the ack drops what the
// client has seen, and a poll that repeats an ack gets the same messages.
func TestHold(t *testing.T) {
	ctx := testContext(t)
	const hold = time.Second
	srv, _ := server(t, roomtest.Config{}, &longpoll.Options{Hold: hold})
	hc := newClient(t)
	w := hello(ctx, t, hc, srv.URL)
	if st := post(ctx, t, hc, srv.URL, "send", w, `{"t":"join","room":"r"}`); st != http.StatusNoContent {
		t.Fatalf("send: %d", st)
	}
	_, batch := rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 0, nil)
	if len(batch) != 1 || !strings.Contains(string(batch[0]), `"t":"joined"`) {
		t.Fatalf("first poll: %s", batch)
	}
	start := time.Now()
	_, batch = rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 1, nil)
	if held := time.Since(start); len(batch) != 0 || held < hold {
		t.Fatalf("idle poll: %s after %v, want [] after %v", batch, held, hold)
	}
	// A held poll answers at once when a message comes.
	type res struct {
		batch []json.RawMessage
		took  time.Duration
	}
	done := make(chan res, 1)
	go func() {
		start := time.Now()
		_, b := rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 1, nil)
		done <- res{b, time.Since(start)}
	}()
	// The pub goes out once the poll is parked... or before; either way
	// the poll answers with it long before the hold ends.
	post(ctx, t, hc, srv.URL, "send", w, `{"t":"pub","room":"r","data":1}`)
	r := <-done
	if len(r.batch) != 1 || !strings.Contains(string(r.batch[0]), `"sseq":2,"t":"ok"`) || r.took >= hold {
		t.Fatalf("held poll: %s after %v", r.batch, r.took)
	}
	// Repeating ack 1 (the answer was lost): the same message again.
	_, batch = rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 1, nil)
	if len(batch) != 1 || string(batch[0]) != string(r.batch[0]) {
		t.Fatalf("repeated poll: %s", batch)
	}
	if DefaultHold := longpoll.DefaultHold; DefaultHold >= 30*time.Second {
		t.Fatalf("default hold %v is not under common 30 s proxy timeouts", DefaultHold)
	}
}

// TestSecondPollReplacesFirst: a second concurrent poll ends the first,
// which answers with close 4004, and carries on itself.
func TestSecondPollReplacesFirst(t *testing.T) {
	ctx := testContext(t)
	srv, _, held := serverHeld(t, roomtest.Config{}, nil) // default hold: 25 s
	hc := newClient(t)
	w := hello(ctx, t, hc, srv.URL)
	first := make(chan []json.RawMessage, 1)
	go func() {
		_, b := rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 0, nil)
		first <- b
	}()
	<-held
	second := make(chan []json.RawMessage, 1)
	go func() {
		_, b := rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 0, nil)
		second <- b
	}()
	b := <-first
	if len(b) != 1 || !isClose(b[0], 4004) {
		t.Fatalf("replaced poll: %s", b)
	}
	<-held
	post(ctx, t, hc, srv.URL, "send", w, `{"t":"ping"}`)
	if b := <-second; len(b) != 1 || !strings.Contains(string(b[0]), `"t":"pong"`) {
		t.Fatalf("second poll: %s", b)
	}
}

// TestCloseBetweenPolls: a session that ends while no poll is held tells
// its client why on the next poll.
func TestCloseBetweenPolls(t *testing.T) {
	ctx := testContext(t)
	srv, reg, held := serverHeld(t, roomtest.Config{}, nil)
	hc := newClient(t)
	w := hello(ctx, t, hc, srv.URL)
	reg.Lookup(w.SID, w.Token).Close(room.ReasonSlowConsumer)
	status, b := rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 0, nil)
	if status != 200 || len(b) != 1 || string(b[0]) != `{"t":"close","code":4001,"reason":"slow consumer","reconnect":true}` {
		t.Fatalf("poll after the session ended: %d %s", status, b)
	}
	if st := post(ctx, t, hc, srv.URL, "send", w, `{"t":"ping"}`); st != http.StatusGone {
		t.Fatalf("send after the session ended: %d, want 410", st)
	}
	// Only with the right token.
	if status, _ := rawPoll(ctx, t, hc, srv.URL, w.SID, "wrong", 0, nil); status != http.StatusUnauthorized {
		t.Fatalf("poll of an ended session with a wrong token: %d", status)
	}
	// Hub shutdown ends a held poll with 4000.
	w2 := hello(ctx, t, hc, srv.URL)
	done := make(chan []json.RawMessage, 1)
	go func() {
		_, b := rawPoll(ctx, t, hc, srv.URL, w2.SID, w2.Token, 0, nil)
		done <- b
	}()
	<-held
	reg.Hub().Shutdown(ctx)
	if b := <-done; len(b) != 1 || !isClose(b[0], 4000) {
		t.Fatalf("held poll at shutdown: %s", b)
	}
}

// TestRefused: a poll or send with a missing or wrong secret, or from a
// foreign origin, is refused and changes nothing: the legitimate poll
// stays held and the room does not move.
func TestRefused(t *testing.T) {
	ctx := testContext(t)
	srv, reg, held := serverHeld(t, roomtest.Config{}, nil)
	hc := newClient(t)
	a, b := hello(ctx, t, hc, srv.URL), hello(ctx, t, hc, srv.URL)
	for _, w := range []welcome{a, b} {
		post(ctx, t, hc, srv.URL, "send", w, `{"t":"join","room":"r"}`)
	}
	_, batch := rawPoll(ctx, t, hc, srv.URL, b.SID, b.Token, 0, nil)
	<-held
	ack := uint64(len(batch))
	_, _, seq0, _ := reg.Hub().Snapshot("r")
	bPoll := make(chan []json.RawMessage, 1)
	go func() {
		_, m := rawPoll(ctx, t, hc, srv.URL, b.SID, b.Token, ack, nil)
		bPoll <- m
	}()
	<-held
	evil := map[string]string{"Origin": "https://evil.example"}
	for _, tc := range []struct {
		name, sid, token string
		hdr              map[string]string
		status           int
	}{
		{"no secret", b.SID, "", nil, 401},
		{"wrong secret", b.SID, "wrong", nil, 401},
		{"a's secret", b.SID, a.Token, nil, 401},
		{"unknown session", "nobody", b.Token, nil, 401},
		{"foreign origin", b.SID, b.Token, evil, 403},
	} {
		if st, _ := rawPoll(ctx, t, hc, srv.URL, tc.sid, tc.token, 0, tc.hdr); st != tc.status {
			t.Errorf("poll with %s: %d, want %d", tc.name, st, tc.status)
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/longpoll/send", strings.NewReader(`{"t":"pub","room":"r","data":"x"}`))
		req.Header.Set(httpclient.HeaderSession, tc.sid)
		req.Header.Set(httpclient.HeaderToken, tc.token)
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), `"t":"error"`) {
			t.Errorf("send with %s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.status)
		}
	}
	if _, _, seq, _ := reg.Hub().Snapshot("r"); seq != seq0 || reg.Len() != 2 {
		t.Fatalf("room seq %d (was %d), %d sessions", seq, seq0, reg.Len())
	}
	select {
	case m := <-bPoll:
		t.Fatalf("b's held poll answered: %s", m)
	default:
	}
	post(ctx, t, hc, srv.URL, "send", a, `{"t":"pub","room":"r","data":"fence"}`)
	if m := <-bPoll; len(m) != 1 || !strings.Contains(string(m[0]), `"data":"fence"`) {
		t.Fatalf("b's held poll: %s, want only the fence", m)
	}
}

// TestReapAbandoned: sessions opened and abandoned (after a hello, or
// after a poll) are reaped once the resume window passes, leaving no
// session, goroutine or memory behind.
func TestReapAbandoned(t *testing.T) {
	ctx := testContext(t)
	srv, reg := server(t, roomtest.Config{ResumeWindow: time.Second}, &longpoll.Options{Hold: time.Millisecond})
	hc := newClient(t)
	// Warm up (connection pool, lazily built structures), then measure.
	w := hello(ctx, t, hc, srv.URL)
	rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 0, nil)
	<-reg.Lookup(w.SID, w.Token).Done()
	g0, h0 := settle(ctx, t, 0)

	const n = 1000
	var sessions []*outbox.Session
	for i := 0; i < n; i++ {
		w := hello(ctx, t, hc, srv.URL)
		s := reg.Lookup(w.SID, w.Token)
		if s == nil {
			t.Fatalf("session %d gone at once", i)
		}
		sessions = append(sessions, s)
		if i%2 == 0 {
			post(ctx, t, hc, srv.URL, "send", w, `{"t":"join","room":"reap"}`)
			rawPoll(ctx, t, hc, srv.URL, w.SID, w.Token, 0, nil)
		}
	}
	t.Logf("%d sessions opened, %d still live", n, reg.Len())
	for _, s := range sessions {
		select {
		case <-s.Done():
		case <-ctx.Done():
			t.Fatalf("%d sessions still live", reg.Len())
		}
		if r := s.Reason(); r != room.ReasonExpired {
			t.Fatalf("session ended with %v", r)
		}
	}
	sessions = nil
	if reg.Len() != 0 || reg.Hub().Stats().Sessions != 0 || reg.Hub().Stats().Rooms != 0 {
		t.Fatalf("after the window: registry %d, hub %+v", reg.Len(), reg.Hub().Stats())
	}
	g1, h1 := settle(ctx, t, g0)
	t.Logf("goroutines %d -> %d; heap %d -> %d bytes (%+d, tombstones for up to %d ended sessions included)", g0, g1, h0, h1, int64(h1)-int64(h0), outbox.MaxTombstones)
	if g1 > g0 {
		t.Fatalf("goroutines: %d before, %d after", g0, g1)
	}
	if grow := int64(h1) - int64(h0); grow > 1<<20 {
		t.Fatalf("heap grew by %d bytes over %d abandoned sessions", grow, n)
	}
}

// settle waits until the goroutine count is at most want (when want > 0)
// and returns it with the live heap after a GC.
func settle(ctx context.Context, t *testing.T, want int) (int, uint64) {
	t.Helper()
	for want > 0 && runtime.NumGoroutine() > want && ctx.Err() == nil {
		runtime.Gosched()
		runtime.GC()
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}
