package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// output collects what run writes and reports the listening address once
// it has been printed.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
	sent bool
}

var listening = regexp.MustCompile(`roomwire listening on (http://\S+)\n`)

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if m := listening.FindSubmatch(o.buf.Bytes()); m != nil && !o.sent {
		o.sent = true
		o.addr <- string(m[1])
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// start runs the server with args in a goroutine and returns its base URL,
// a function that stops it, and the channel run's result arrives on.
func start(t *testing.T, ctx context.Context, args ...string) (base string, stop context.CancelFunc, result <-chan error, out *output) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	out = &output{addr: make(chan string, 1)}
	done := make(chan error, 1)
	args = append([]string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, args...)
	go func() { done <- run(rctx, args, out) }()
	select {
	case base = <-out.addr:
	case err := <-done:
		cancel()
		t.Fatalf("run returned before listening: %v\n%s", err, out)
	case <-ctx.Done():
		cancel()
		t.Fatalf("no listening address printed: %v\n%s", ctx.Err(), out)
	}
	return base, cancel, done, out
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	base, stop, result, out := start(t, ctx, "-shutdown-timeout", "5s", "-log-level", "debug")
	defer stop()
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("listening on %q", base)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, string(body)
	}
	stats := func() map[string]any {
		t.Helper()
		res, body := get("/healthz")
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("/healthz: %d %q %s", res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("/healthz body %q: %v", body, err)
		}
		return m
	}

	if m := stats(); m["status"] != "ok" || m["sessions"] != 0.0 || m["rooms"] != 0.0 {
		t.Fatalf("/healthz before any client: %v", m)
	}
	res, page := get("/")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(page, "roomwire demos") || !strings.Contains(page, "editor.html") {
		t.Fatalf("GET /: %d %q\n%.300s", res.StatusCode, res.Header.Get("Content-Type"), page)
	}
	if res, js := get("/roomwire.js"); res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/javascript") || !strings.Contains(js, "export function connect") {
		t.Fatalf("GET /roomwire.js: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if res, _ := get("/rt/nope"); res.StatusCode != 404 {
		t.Fatalf("GET /rt/nope: %d, want 404", res.StatusCode)
	}

	// A WebSocket client: hello, join, then the server shuts down under it.
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(base, "http")+"/rt/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	send := func(v string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(typ string) map[string]any {
		t.Helper()
		for {
			_, frame, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s: %v", typ, err)
			}
			for line := range strings.SplitSeq(string(frame), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("bad server message %q: %v", line, err)
				}
				if m["t"] == typ {
					return m
				}
			}
		}
	}
	send(`{"t":"hello","user":{"name":"test"}}`)
	if w := recv("welcome"); w["sid"] == "" || w["resumed"] != false {
		t.Fatalf("welcome: %v", w)
	}
	send(`{"t":"join","room":"lobby","cid":"j1"}`)
	if j := recv("joined"); j["mode"] != "snapshot" || j["room"] != "lobby" {
		t.Fatalf("joined: %v", j)
	}
	if m := stats(); m["sessions"] != 1.0 || m["rooms"] != 1.0 {
		t.Fatalf("/healthz with one client in one room: %v", m)
	}

	stop()
	for err == nil {
		_, _, err = ws.ReadMessage() // whatever is still queued, then the close
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 {
		t.Fatalf("after shutdown the client got %v, want close code 4000", err)
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, out)
		}
	case <-ctx.Done():
		t.Fatalf("run did not return: %v\n%s", ctx.Err(), out)
	}
	logs := out.String()
	for _, want := range []string{"path=/healthz", "path=/roomwire.js", "shutting down", "stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "path=/rt/ws") {
		t.Errorf("the WebSocket request was logged:\n%s", logs)
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		origins []string
		err     string
	}{
		{args: nil},
		{args: []string{"-allow-origin", "https://a.example, https://b.example", "-allow-origin", "https://*.c.example"}, origins: []string{"https://a.example", "https://b.example", "https://*.c.example"}},
		{args: []string{"-log-level", "loud"}, err: "log-level"},
		{args: []string{"-resume-window", "0s"}, err: "positive"},
		{args: []string{"extra"}, err: "unexpected arguments"},
		{args: []string{"-nope"}, err: "not defined"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			c, err := parseFlags(tc.args, &out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.addr != ":8080" || c.resumeWindow != 30*time.Second || c.shutdownTimeout != 10*time.Second {
				t.Errorf("defaults: %+v", c)
			}
			if !slices.Equal(c.origins, tc.origins) {
				t.Errorf("origins %q, want %q", c.origins, tc.origins)
			}
		})
	}
}

func TestHelpAndBadFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, &out); err != nil {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(out.String(), "-allow-origin") {
		t.Fatalf("-h printed:\n%s", out.String())
	}
	if err := run(t.Context(), []string{"-addr", "127.0.0.1:-1"}, io.Discard); err == nil {
		t.Fatal("a bad address did not fail")
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseFlags -h: %v", err)
	}
}
