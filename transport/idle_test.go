package transport_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/internal/httpclient"
	"github.com/roomwire/roomwire/transport/longpoll"
)

// TestIdleMemory measures what one idle SSE stream and one parked long-poll
// cost the server: heap and goroutine stacks per connection, session
// included. The clients run in a child process (this test binary again), so
// that only the server's memory is measured and neither process holds more
// than about n+100 files. It runs only when ROOMWIRE_MEASURE_IDLE is set to
// the number of connections, e.g.
//
//	ROOMWIRE_MEASURE_IDLE=5000 go test -run TestIdleMemory -count=1 -v ./transport/
func TestIdleMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ROOMWIRE_MEASURE_IDLE"))
	if n <= 0 {
		t.Skip("set ROOMWIRE_MEASURE_IDLE=5000 to measure")
	}
	ctx := testContext(t, 10*time.Minute)
	for _, kind := range []string{"sse", "longpoll"} {
		s := start(t, &transport.Options{ResumeWindow: 10 * time.Minute, LongPoll: longpoll.Options{Hold: 10 * time.Minute}})
		g0, heap0, stack0 := memNow()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("ROOMWIRE_IDLE_CLIENT=%s %s/rt/%s %d", kind, s.srv.URL, kind, n))
		stdin, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			t.Fatalf("client process: %q %v", line, err)
		}
		// Every stream has its response headers; a poll is parked once its
		// handler runs: wait for the goroutines (conn + background read).
		for runtime.NumGoroutine() < g0+2*n && ctx.Err() == nil {
			runtime.Gosched()
		}
		g1, heap1, stack1 := memNow()
		t.Logf("%s: %d idle connections: %.1f KiB heap + %.1f KiB stacks = %.1f KiB each, %.2f goroutines each (server side, session included)",
			kind, n, float64(heap1-heap0)/1024/float64(n), float64(stack1-stack0)/1024/float64(n),
			float64(heap1+stack1-heap0-stack0)/1024/float64(n), float64(g1-g0)/float64(n))
		stdin.Close()
		cmd.Wait()
		if err := s.hub.Shutdown(ctx); err != nil { // end them all before the next kind
			t.Fatal(err)
		}
	}
}

func memNow() (goroutines int, heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc, ms.StackInuse
}

// idleClientMain is the client process of TestIdleMemory: with
// ROOMWIRE_IDLE_CLIENT="kind url n" it opens n sessions on one connection
// each, hello then an event stream (sse) or a poll (longpoll), prints
// "ready" once all are open, and exits when its stdin closes.
func idleClientMain() bool {
	spec := os.Getenv("ROOMWIRE_IDLE_CLIENT")
	if spec == "" {
		return false
	}
	var kind, url string
	var n int
	if _, err := fmt.Sscan(spec, &kind, &url, &n); err != nil {
		fmt.Fprintln(os.Stderr, "bad ROOMWIRE_IDLE_CLIENT:", err)
		os.Exit(2)
	}
	host := strings.TrimPrefix(url, "http://")
	host = host[:strings.Index(host, "/")]
	conns := make([]net.Conn, 0, n)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "idle client:", err)
		os.Exit(1)
	}
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			fail(err)
		}
		conns = append(conns, c)
		br := bufio.NewReader(c)
		req, _ := http.NewRequest("POST", url+"/hello", strings.NewReader(`{"t":"hello"}`))
		if err := req.Write(c); err != nil {
			fail(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			fail(err)
		}
		var w struct{ SID, Token, Ticket string }
		err = json.NewDecoder(resp.Body).Decode(&w)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			fail(err)
		}
		if kind == "sse" {
			req, _ = http.NewRequest("GET", url+"/events?ticket="+w.Ticket, nil)
		} else {
			req, _ = http.NewRequest("POST", url+"/poll", strings.NewReader(`{"ack":0}`))
			req.Header.Set(httpclient.HeaderSession, w.SID)
			req.Header.Set(httpclient.HeaderToken, w.Token)
		}
		if err := req.Write(c); err != nil {
			fail(err)
		}
		if kind == "sse" { // wait for the headers: the stream is attached
			if resp, err := http.ReadResponse(br, req); err != nil || resp.StatusCode != 200 {
				fail(fmt.Errorf("stream: %v %v", resp, err))
			}
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return true
}
