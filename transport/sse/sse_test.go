package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport/internal/httpclient"
	"github.com/roomwire/roomwire/transport/outbox"
	"github.com/roomwire/roomwire/transport/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server starts a hub and an SSE handler behind httptest; the endpoints
// are under srv.URL+"/sse".
func server(t *testing.T, cfg roomtest.Config, opts *sse.Options) (*httptest.Server, *outbox.Registry) {
	hub := room.NewHub(&room.Options{Log: room.LogLimits{MaxEntries: cfg.LogEntries}})
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: cfg.ResumeWindow, MaxQueueBytes: cfg.MaxQueueBytes})
	h := sse.NewHandler(reg, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), roomtest.Timeout)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("sse shutdown: %v", err)
		}
		srv.Close()
	})
	return srv, reg
}

func factory(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
	srv, _ := server(t, cfg, nil)
	return func(ctx context.Context) (roomtest.Conn, error) {
		return httpclient.NewSSE(srv.URL+"/sse", nil), nil
	}
}

func TestConformance(t *testing.T) { roomtest.Run(t, factory) }

// client says hello over SSE and returns the client and its welcome.
func client(ctx context.Context, t *testing.T, srv *httptest.Server, opts *httpclient.Options) *httpclient.SSE {
	t.Helper()
	c := httpclient.NewSSE(srv.URL+"/sse", opts)
	t.Cleanup(func() { c.Close() })
	if err := c.Send(ctx, []byte(`{"t":"hello"}`)); err != nil {
		t.Fatalf("hello: %v", err)
	}
	if w, err := c.Recv(ctx); err != nil || !strings.Contains(string(w), `"welcome"`) {
		t.Fatalf("welcome: %s %v", w, err)
	}
	return c
}

// recvUntil receives messages until match; it returns them all.
func recvUntil(ctx context.Context, t *testing.T, c roomtest.Conn, what string, match func(m roomtest.Msg) bool) []roomtest.Msg {
	t.Helper()
	var got []roomtest.Msg
	for {
		raw, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		var m roomtest.Msg
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("message %q: %v", raw, err)
		}
		m.Raw = raw
		got = append(got, m)
		if match(m) {
			return got
		}
	}
}

func send(ctx context.Context, t *testing.T, c roomtest.Conn, msg string) {
	t.Helper()
	if err := c.Send(ctx, []byte(msg)); err != nil {
		t.Fatalf("send %s: %v", msg, err)
	}
}

func join(ctx context.Context, t *testing.T, c roomtest.Conn, room string) {
	t.Helper()
	send(ctx, t, c, `{"t":"join","room":"`+room+`"}`)
	recvUntil(ctx, t, c, "joined", func(m roomtest.Msg) bool { return m.T == "joined" })
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStreamHeaders: the headers that keep proxies and browsers from
// buffering or caching, the opening padding, and keepalive comments.
func TestStreamHeaders(t *testing.T) {
	ctx := testContext(t)
	srv, _ := server(t, roomtest.Config{}, &sse.Options{KeepAlive: 20 * time.Millisecond, Padding: 100})
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/sse/hello", strings.NewReader(`{"t":"hello"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ Ticket, Token string }
	json.NewDecoder(resp.Body).Decode(&w)
	resp.Body.Close()
	if w.Ticket == "" || w.Token == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("hello reply: %+v %v", w, resp.Header)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ = http.NewRequestWithContext(sctx, "GET", srv.URL+"/sse/events?ticket="+w.Ticket, nil)
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for k, v := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache, no-store, no-transform",
		"X-Accel-Buffering": "no",
		"Content-Encoding":  "",
		"Content-Length":    "",
	} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != ":"+strings.Repeat(" ", 100)+"\n" {
		t.Fatalf("opening comment %q %v", first, err)
	}
	for n := 0; n < 3; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": keepalive\n" {
			n++
		}
	}
	cancel()
}

// TestLastEventID: a client that drops its stream and reconnects with
// Last-Event-ID receives exactly the messages it missed.
func TestLastEventID(t *testing.T) {
	ctx := testContext(t)
	srv, _ := server(t, roomtest.Config{}, nil)
	a := client(ctx, t, srv, nil)
	b := client(ctx, t, srv, nil)
	join(ctx, t, a, "r")
	join(ctx, t, b, "r")
	recvUntil(ctx, t, a, "b's join", func(m roomtest.Msg) bool { return m.T == "presence" })
	for i := 1; i <= 10; i++ {
		send(ctx, t, a, fmt.Sprintf(`{"t":"pub","room":"r","data":%d}`, i))
	}
	recvUntil(ctx, t, b, "event 10", func(m roomtest.Msg) bool { return m.T == "event" && string(m.Data) == "10" })
	seen := b.LastEventID()
	b.Cut()
	const missed = 50
	for i := 11; i <= 10+missed; i++ {
		send(ctx, t, a, fmt.Sprintf(`{"t":"pub","room":"r","data":%d}`, i))
	}
	recvUntil(ctx, t, a, "the last ok", func(m roomtest.Msg) bool { return m.T == "ok" && *m.Seq == 10+missed })

	// A new ticket without an ack: the stream starts at Last-Event-ID.
	ticket, err := b.Ticket(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Open(ctx, ticket, seen); err != nil {
		t.Fatal(err)
	}
	send(ctx, t, a, `{"t":"pub","room":"r","data":"fence"}`)
	got := recvUntil(ctx, t, b, "the fence", func(m roomtest.Msg) bool { return string(m.Data) == `"fence"` })
	if len(got) != missed+1 {
		t.Fatalf("after reconnect: %d messages, want %d missed and the fence", len(got), missed)
	}
	for i, m := range got {
		if m.SSeq != seen+uint64(i)+1 {
			t.Fatalf("message %d after reconnect has sseq %d, want %d: %s", i, m.SSeq, seen+uint64(i)+1, m.Raw)
		}
		if i < missed && string(m.Data) != strconv.Itoa(11+i) {
			t.Fatalf("message %d after reconnect: %s, want event %d", i, m.Raw, 11+i)
		}
	}
	// Browser style: a new stream with the ack in the ticket request and
	// no Last-Event-ID.
	b.Cut()
	send(ctx, t, a, `{"t":"pub","room":"r","data":"while away"}`)
	last := b.LastEventID()
	t2, err := b.Ticket(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Open(ctx, t2, 0); err != nil {
		t.Fatal(err)
	}
	if got := recvUntil(ctx, t, b, "the event sent while away", func(m roomtest.Msg) bool { return m.T == "event" }); len(got) != 1 || got[0].SSeq != last+1 || string(got[0].Data) != `"while away"` {
		t.Fatalf("after a re-ticketed reconnect: %s", got[0].Raw)
	}
	// The ticket was single use.
	if err := b.Open(ctx, ticket, seen); !isStatus(err, http.StatusUnauthorized) {
		t.Fatalf("second use of a ticket: %v, want 401", err)
	}
}

func isStatus(err error, status int) bool {
	var se *httpclient.StatusError
	return errors.As(err, &se) && se.Status == status
}

// TestRefused: a send, ticket or close with a missing or wrong secret, or
// from a foreign origin, is refused and changes nothing.
func TestRefused(t *testing.T) {
	ctx := testContext(t)
	srv, reg := server(t, roomtest.Config{}, nil)
	a := client(ctx, t, srv, nil)
	b := client(ctx, t, srv, nil)
	join(ctx, t, a, "r")
	join(ctx, t, b, "r")
	recvUntil(ctx, t, a, "b's join", func(m roomtest.Msg) bool { return m.T == "presence" })
	_, _, seq0, _ := reg.Hub().Snapshot("r")

	do := func(method, endpoint, body string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+"/sse/"+endpoint, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pub := `{"t":"pub","room":"r","data":"intruder"}`
	for _, tc := range []struct {
		name, method, endpoint, body string
		hdr                          map[string]string
		status                       int
	}{
		{"send without secret", "POST", "send", pub, map[string]string{httpclient.HeaderSession: b.SID()}, 401},
		{"send with wrong secret", "POST", "send", pub, map[string]string{httpclient.HeaderSession: b.SID(), httpclient.HeaderToken: "wrong"}, 401},
		{"send for unknown session", "POST", "send", pub, map[string]string{httpclient.HeaderSession: "nobody", httpclient.HeaderToken: b.Token()}, 401},
		{"send from a foreign origin", "POST", "send", pub, map[string]string{httpclient.HeaderSession: b.SID(), httpclient.HeaderToken: b.Token(), "Origin": "https://evil.example"}, 403},
		{"ticket with wrong secret", "POST", "ticket", "", map[string]string{httpclient.HeaderSession: b.SID(), httpclient.HeaderToken: "wrong"}, 401},
		{"ticket from a foreign origin", "POST", "ticket", "", map[string]string{httpclient.HeaderSession: b.SID(), httpclient.HeaderToken: b.Token(), "Origin": "https://evil.example"}, 403},
		{"close with wrong secret", "POST", "close", "", map[string]string{httpclient.HeaderSession: b.SID(), httpclient.HeaderToken: "wrong"}, 401},
		{"close without secret", "POST", "close", "", nil, 401},
		{"stream without ticket", "GET", "events", "", nil, 401},
		{"stream with a made-up ticket", "GET", "events?ticket=abc", "", nil, 401},
		{"hello from a foreign origin", "POST", "hello", `{"t":"hello"}`, map[string]string{"Origin": "https://evil.example"}, 403},
		{"send with GET", "GET", "send", pub, map[string]string{httpclient.HeaderSession: b.SID(), httpclient.HeaderToken: b.Token()}, 405},
	} {
		status, body := do(tc.method, tc.endpoint, tc.body, tc.hdr)
		if status != tc.status || !strings.Contains(body, `"t":"error"`) {
			t.Errorf("%s: %d %s, want %d and an error body", tc.name, status, body, tc.status)
		}
	}
	if _, _, seq, _ := reg.Hub().Snapshot("r"); seq != seq0 || reg.Len() != 2 {
		t.Fatalf("room seq %d (was %d), %d sessions: the refused requests changed something", seq, seq0, reg.Len())
	}
	// Both streams are intact: the next thing each sees is a's fence.
	send(ctx, t, a, `{"t":"pub","room":"r","data":"fence"}`)
	if got := recvUntil(ctx, t, b, "the fence", func(m roomtest.Msg) bool { return m.T == "event" }); len(got) != 1 || string(got[0].Data) != `"fence"` {
		t.Fatalf("b saw %d messages before the fence: %s", len(got), got[0].Raw)
	}
	if got := recvUntil(ctx, t, a, "ok for the fence", func(m roomtest.Msg) bool { return m.T == "ok" }); len(got) != 1 {
		t.Fatalf("a saw %s before its ok", got[0].Raw)
	}
}

// TestSendLimitsAndErrors: an oversize body or message is refused with 413
// and nothing of it applies; malformed JSON gets the in-band bad_request
// error, and the rest of the batch still applies.
func TestSendLimitsAndErrors(t *testing.T) {
	ctx := testContext(t)
	srv, reg := server(t, roomtest.Config{}, &sse.Options{MaxMessageBytes: 1000, MaxBodyBytes: 4000})
	a := client(ctx, t, srv, nil)
	join(ctx, t, a, "r")
	big := `{"t":"pub","room":"r","data":"` + strings.Repeat("x", 1000) + `"}`
	small := `{"t":"pub","room":"r","data":1}`
	for _, body := range []string{big, small + "\n" + big, strings.Repeat(small+"\n", 200)} {
		err := a.Send(ctx, []byte(body))
		if !isStatus(err, http.StatusRequestEntityTooLarge) || !strings.Contains(err.Error(), `"code":"too_large"`) {
			t.Fatalf("oversize send of %d bytes: %v, want 413", len(body), err)
		}
	}
	if _, _, seq, _ := reg.Hub().Snapshot("r"); seq != 0 {
		t.Fatalf("room seq %d after refused sends", seq)
	}
	send(ctx, t, a, `{"t":`+"\n"+small)
	got := recvUntil(ctx, t, a, "the ok", func(m roomtest.Msg) bool { return m.T == "ok" })
	if len(got) != 2 || got[0].T != "error" || got[0].Code != "bad_request" {
		t.Fatalf("malformed then valid: %d messages, first %s", len(got), got[0].Raw)
	}
	// A bad hello is a 400, not a session.
	for _, body := range []string{`{"t":`, `{"t":"join"}`} {
		resp, err := http.Post(srv.URL+"/sse/hello", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("hello %s: %d, want 400", body, resp.StatusCode)
		}
	}
	if reg.Len() != 1 {
		t.Fatalf("%d sessions after bad hellos", reg.Len())
	}
}

// TestCloseMessages: the stream carries the session's close reason, both
// while it is open and, through the ticket, after the session ended.
func TestCloseMessages(t *testing.T) {
	ctx := testContext(t)
	srv, reg := server(t, roomtest.Config{}, nil)

	// POST close: the stream ends with 1000.
	a := client(ctx, t, srv, nil)
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/sse/close", nil)
	req.Header.Set(httpclient.HeaderSession, a.SID())
	req.Header.Set(httpclient.HeaderToken, a.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("close: %d", resp.StatusCode)
	}
	wantClose(ctx, t, a, 1000)
	// The session is gone: a ticket request says why, with 410.
	if _, err := a.Ticket(ctx, 0); !isStatus(err, http.StatusGone) || !strings.Contains(err.Error(), `"t":"close","code":1000`) {
		t.Fatalf("ticket after close: %v", err)
	}

	// A second stream replaces the first, which ends with 4004.
	b := client(ctx, t, srv, nil)
	ticket, err := b.Ticket(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	b2 := httpclient.NewSSE(srv.URL+"/sse", nil)
	defer b2.Close()
	if err := b2.Open(ctx, ticket, 0); err != nil {
		t.Fatal(err)
	}
	wantClose(ctx, t, b, 4004)

	// A session that ends while no stream is open: the ticket it got
	// before opens a stream that carries only the close.
	c := client(ctx, t, srv, nil)
	ticket, err = c.Ticket(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Cut()
	reg.Lookup(c.SID(), c.Token()).Close(room.ReasonSlowConsumer)
	if err := c.Open(ctx, ticket, 0); err != nil {
		t.Fatal(err)
	}
	wantClose(ctx, t, c, 4001)

	// Hub shutdown: 4000.
	d := client(ctx, t, srv, nil)
	join(ctx, t, d, "r")
	if err := reg.Hub().Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wantClose(ctx, t, d, 4000)
	b2.Close()
}

func wantClose(ctx context.Context, t *testing.T, c roomtest.Conn, code int) {
	t.Helper()
	for {
		_, err := c.Recv(ctx)
		if err == nil {
			continue
		}
		var ce *roomtest.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			t.Fatalf("stream ended with %v, want close %d", err, code)
		}
		return
	}
}

// TestCORS: an allowed cross-origin client gets its preflight answered and
// CORS headers on every answer; others get 403, preflight included.
func TestCORS(t *testing.T) {
	ctx := testContext(t)
	srv, _ := server(t, roomtest.Config{}, &sse.Options{AllowedOrigins: []string{"https://app.example"}})
	for _, tc := range []struct {
		origin string
		status int
	}{{"https://app.example", 204}, {"https://evil.example", 403}, {"null", 403}} {
		req, _ := http.NewRequestWithContext(ctx, "OPTIONS", srv.URL+"/sse/send", nil)
		req.Header.Set("Origin", tc.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "roomwire-session, roomwire-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("preflight from %s: %d, want %d", tc.origin, resp.StatusCode, tc.status)
		}
		if tc.status == 204 && (resp.Header.Get("Access-Control-Allow-Origin") != tc.origin ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Roomwire-Token") ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST")) {
			t.Errorf("preflight headers: %v", resp.Header)
		}
	}
	c := client(ctx, t, srv, &httpclient.Options{Header: http.Header{"Origin": {"https://app.example"}}})
	join(ctx, t, c, "r")
	http.DefaultClient.CloseIdleConnections()
}

// TestTicketExpiry: a ticket past its TTL opens nothing.
func TestTicketExpiry(t *testing.T) {
	ctx := testContext(t)
	srv, reg := server(t, roomtest.Config{}, &sse.Options{TicketTTL: time.Nanosecond})
	c := httpclient.NewSSE(srv.URL+"/sse", nil)
	defer c.Close()
	if err := c.Send(ctx, []byte(`{"t":"hello"}`)); !isStatus(err, http.StatusUnauthorized) {
		t.Fatalf("stream with an expired ticket: %v, want 401", err)
	}
	if reg.Len() != 1 { // the session is there, waiting for a stream
		t.Fatalf("%d sessions", reg.Len())
	}
}
