package transport_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/internal/httpclient"
	"github.com/roomwire/roomwire/transport/longpoll"
)

// nginx is a running nginx in front of an upstream.
type nginx struct {
	URL string // http://127.0.0.1:port
	Dir string // prefix: config, logs, temp files
}

// startNginx runs nginx with testdata/nginx.conf.tmpl in front of upstream
// (host:port) until the test ends. Without nginx the test fails when CI is
// set, and is skipped otherwise.
func startNginx(ctx context.Context, t *testing.T, upstream string) *nginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nginx is not installed, and CI needs it: apt-get install -y nginx (%v)", err)
		}
		t.Skipf("nginx is not installed (apt-get install -y nginx): %v", err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nginx binds it next; another process taking it in between fails the start loudly
	tmpl, err := template.ParseFiles("testdata/nginx.conf.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must write to Dir, which only root may
	}
	conf := filepath.Join(dir, "nginx.conf")
	f, err := os.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	err = tmpl.Execute(f, map[string]any{"Dir": dir, "Port": port, "Upstream": upstream, "User": user})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", "stderr", "-p", dir, "-c", conf, "-g", "daemon off;")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	ready := make(chan struct{})
	logDone := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "start worker processes") {
				close(ready)
			}
		}
		logDone <- lines
	}()
	exited := make(chan error, 1)
	go func() {
		lines := <-logDone
		err := cmd.Wait()
		if err != nil && len(lines) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.Join(lines, "\n"))
		}
		exited <- err
	}()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM) // fast shutdown: the master stops its workers
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("nginx exited at start: %v", err)
	case <-ctx.Done():
		stop()
		t.Fatalf("nginx did not start: %v", ctx.Err())
	}
	t.Cleanup(stop)
	return &nginx{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Dir: dir}
}

// TestBehindNginx: through nginx with its default response buffering, SSE
// events arrive promptly, long-polls are held and answered, and 10,000
// messages arrive over each, in order, none lost or duplicated. No session
// secret reaches nginx's access log.
func TestBehindNginx(t *testing.T) {
	ctx := testContext(t, 180*time.Second)
	const hold = 2 * time.Second
	s := start(t, &transport.Options{LongPoll: longpoll.Options{Hold: hold}})
	ngx := startNginx(ctx, t, s.srv.Listener.Addr().String())
	direct, proxied := s.srv.URL+"/rt", ngx.URL+"/rt"

	pub := roomtest.Connect(ctx, t, wsDialer(direct), "pub", nil)
	pub.Join(ctx, "n", nil)
	sseC := roomtest.Connect(ctx, t, sseDialer(proxied), "sse", nil)
	pollC := roomtest.Connect(ctx, t, pollDialer(proxied), "poll", nil)
	sseC.Join(ctx, "n", nil)
	pollC.Join(ctx, "n", nil)

	// Latency: one event at a time, published directly, received through
	// nginx. A buffering proxy would hold these back until its buffer or
	// the upstream response ended.
	var sseLat, pollLat []time.Duration
	sseFrom, pollFrom := 0, 0
	for i := 0; i < 20; i++ {
		start := time.Now()
		pub.Send(ctx, map[string]any{"t": "pub", "room": "n", "cid": pub.NextCID(), "data": fmt.Sprintf("probe%d", i)})
		want := fmt.Sprintf(`"probe%d"`, i)
		sseC.WaitFor(ctx, &sseFrom, "probe over SSE", func(m *roomtest.Msg) bool { return m.T == "event" && string(m.Data) == want })
		sseLat = append(sseLat, time.Since(start))
		pollC.WaitFor(ctx, &pollFrom, "probe over long-polling", func(m *roomtest.Msg) bool { return m.T == "event" && string(m.Data) == want })
		pollLat = append(pollLat, time.Since(start))
	}
	t.Logf("through nginx: first SSE event %v after publishing; SSE %s; long-poll %s", sseLat[0], stats(sseLat), stats(pollLat))
	if slices.Max(sseLat) > 5*time.Second {
		t.Fatalf("an SSE event took %v through nginx: the stream is being buffered", slices.Max(sseLat))
	}

	// An idle poll is held for the hold time and answers an empty batch; a
	// held poll answers as soon as there is something.
	lp := httpclient.NewPoll(proxied+"/longpoll", nil)
	defer lp.Close()
	if err := lp.Send(ctx, []byte(`{"t":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	lp.Recv(ctx) // the welcome
	t0 := time.Now()
	status, body := rawPoll(ctx, t, proxied, lp.SID(), lp.Token(), 0)
	if held := time.Since(t0); status != 200 || body != "[]" || held < hold || held > hold+5*time.Second {
		t.Fatalf("idle poll through nginx: %d %s after %v, want [] after %v", status, body, held, hold)
	}
	got := make(chan string, 1)
	t0 = time.Now()
	go func() {
		_, body := rawPoll(ctx, t, proxied, lp.SID(), lp.Token(), 0)
		got <- body
	}()
	// The ping may arrive before the poll is held or while it is: either
	// way the poll answers with the pong at once.
	if err := lp.Send(ctx, []byte(`{"t":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if body := <-got; !strings.Contains(body, `"t":"pong"`) || time.Since(t0) > hold {
		t.Fatalf("held poll through nginx: %s after %v", body, time.Since(t0))
	}
	t.Logf("through nginx: idle poll held %v; a held poll answered in %v", hold, time.Since(t0))

	// A stream request with a bad ticket is refused (and logged: nginx runs
	// one worker, which logs each request as it ends).
	if resp, err := http.Get(proxied + "/sse/events?ticket=used-or-made-up"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream with a bad ticket: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// 10,000 messages, published in batches.
	const total = 10000
	for i := 0; i < total; i += 100 {
		var batch []byte
		for k := i; k < i+100; k++ {
			batch = fmt.Appendf(batch, `{"t":"pub","room":"n","data":%d}`+"\n", k)
		}
		pub.SendRaw(ctx, batch)
	}
	t0 = time.Now()
	for _, c := range []*roomtest.Client{sseC, pollC} {
		from := map[*roomtest.Client]int{sseC: sseFrom, pollC: pollFrom}[c]
		for k := 0; k < total; k++ {
			want := fmt.Sprint(k)
			m := c.WaitFor(ctx, &from, fmt.Sprintf("message %d of %d", k+1, total), func(m *roomtest.Msg) bool { return m.T == "event" })
			if string(m.Data) != want {
				t.Fatalf("%s: event %s, want %s (lost, duplicated or reordered)", c.Welcome.SID, m.Data, want)
			}
		}
	}
	t.Logf("through nginx: %d messages over SSE and long-polling in %v", total, time.Since(t0))

	// The secret never shows in a URL, so not in the access log either.
	log, err := os.ReadFile(filepath.Join(ngx.Dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*roomtest.Client{sseC, pollC} {
		if strings.Contains(string(log), c.Token) {
			t.Fatalf("a session token is in nginx's access log")
		}
	}
	// nginx logs a request when it ends; the streams are still open, and
	// the refused one below ended before the 10,000 messages were sent.
	for _, want := range []string{"POST /rt/sse/hello", "POST /rt/sse/send", "POST /rt/longpoll/poll", "GET /rt/sse/events?ticket=used-or-made-up"} {
		if !strings.Contains(string(log), want) {
			t.Fatalf("access log has no %q:\n%.2000s", want, log)
		}
	}
}

// TestNginxWithoutUpgrade: behind a proxy that does not pass the Upgrade
// and Connection headers, the WebSocket handshake fails with a clear
// error, while SSE and long-polling carry the room.
func TestNginxWithoutUpgrade(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	s := start(t, nil)
	ngx := startNginx(ctx, t, s.srv.Listener.Addr().String())

	// The same nginx passes WebSocket where it is configured to.
	c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(ngx.URL, "http")+"/rt/ws", nil)
	if err != nil {
		t.Fatalf("WebSocket through the upgrading location: %v", err)
	}
	c.Close()
	_, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(ngx.URL, "http")+"/noupgrade/ws", nil)
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("WebSocket without Upgrade: %v (%v), want a bad handshake with 400", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("WebSocket through a proxy without Upgrade: %v: HTTP %d %s", err, resp.StatusCode, strings.TrimSpace(string(body)))

	base := ngx.URL + "/noupgrade"
	a := roomtest.Connect(ctx, t, sseDialer(base), "sse", nil)
	b := roomtest.Connect(ctx, t, pollDialer(base), "poll", nil)
	a.Join(ctx, "x", nil)
	b.Join(ctx, "x", nil)
	const n = 100
	for i := 0; i < n/2; i++ {
		a.Send(ctx, map[string]any{"t": "pub", "room": "x", "cid": a.NextCID(), "data": i})
		b.Send(ctx, map[string]any{"t": "pub", "room": "x", "cid": b.NextCID(), "data": i})
	}
	if !slices.Equal(durables(ctx, t, a, "x", n), durables(ctx, t, b, "x", n)) {
		t.Fatalf("SSE and long-polling members disagree on the order")
	}
}

// rawPoll polls once by hand and returns the status and body.
func rawPoll(ctx context.Context, t *testing.T, base, sid, token string, ack uint64) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/longpoll/poll", strings.NewReader(fmt.Sprintf(`{"ack":%d}`, ack)))
	req.Header.Set(httpclient.HeaderSession, sid)
	req.Header.Set(httpclient.HeaderToken, token)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Errorf("poll: %v", err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func stats(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("median %v, max %v over %d", s[len(s)/2], s[len(s)-1], len(s))
}
