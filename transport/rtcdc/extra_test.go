package rtcdc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/signaling"
	"github.com/roomwire/roomwire/transport/rtcdc"
)

// eventually polls cond until it holds or ctx ends.
func eventually(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// 200 sessions negotiate and drop: half connect, say hello and close;
// half post an offer and vanish before ICE (the server reaps them after
// ConnectTimeout). Afterwards no PeerConnection, goroutine or socket is
// left, in the server or the clients.
func TestNoLeaks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*roomtest.Timeout)
	defer cancel()
	srv, _, h := server(t, roomtest.Config{ResumeWindow: 100 * time.Millisecond}, nil, &rtcdc.Options{ConnectTimeout: 5 * time.Second})
	api := loopbackAPI(t)
	hc := &http.Client{}
	url := srv.URL + "/rtc"
	session := func() error {
		start := time.Now()
		c, err := rtcdc.Dial(ctx, url, &rtcdc.DialOptions{API: api, HTTPClient: hc})
		if err != nil {
			return fmt.Errorf("dial (after %v): %w", time.Since(start), err)
		}
		defer c.Close()
		if err := c.Send(ctx, []byte(`{"t":"hello"}`)); err != nil {
			return err
		}
		w, err := c.Recv(ctx)
		if err != nil || !json.Valid(w) {
			return fmt.Errorf("welcome: %q %v", w, err)
		}
		return nil
	}
	offerOnly := func() error {
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return err
		}
		defer pc.Close()
		if _, err := pc.CreateDataChannel(rtcdc.LabelReliable, nil); err != nil {
			return err
		}
		o, err := pc.CreateOffer(nil)
		if err != nil {
			return err
		}
		if err := pc.SetLocalDescription(o); err != nil {
			return err
		}
		body, _ := json.Marshal(o)
		resp, err := hc.Post(url+"/offer", "application/json", bytesReader(body))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("offer: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	// Warm up, so that lazily started pieces count in the baseline.
	if err := session(); err != nil {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	eventually(ctx, t, "warm-up connection gone", func() bool { return h.Len() == 0 })
	fds0, gr0 := openFDs(t), runtime.NumGoroutine()

	const total, parallel = 200, 10
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for i := range parallel {
		wg.Go(func() {
			for k := i; k < total; k += parallel {
				f := session
				if k%2 == 1 {
					f = offerOnly
				}
				if err := f(); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	hc.CloseIdleConnections()
	start := time.Now()
	eventually(ctx, t, "every server PeerConnection closed", func() bool { return h.Len() == 0 })
	eventually(ctx, t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= gr0 })
	eventually(ctx, t, "file descriptors back to the baseline", func() bool { return openFDs(t) <= fds0 })
	t.Logf("%d negotiations (half abandoned before ICE); back to %d fds, %d goroutines %v after the last one", total, openFDs(t), runtime.NumGoroutine(), time.Since(start).Round(time.Millisecond))
}

// A 60 Hz cursor stream over the unordered channel: the receiver ends on
// the latest value, and durable messages sent meanwhile are not delayed.
func TestCursorStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), roomtest.Timeout)
	defer cancel()
	srv, _, _ := server(t, roomtest.Config{}, nil, nil)
	api := loopbackAPI(t)
	var last *Conn
	dialer := func(ctx context.Context) (roomtest.Conn, error) {
		c, err := dial(ctx, t, api, srv.URL)
		last = c
		return c, err
	}
	a := roomtest.Connect(ctx, t, dialer, "a", nil)
	aConn := last
	b := roomtest.Connect(ctx, t, dialer, "b", nil)
	a.Join(ctx, "c", nil)
	b.Join(ctx, "c", nil)

	// Durable latency: pub from a, event at b.
	pubs := func(n int, cursors bool) []time.Duration {
		var lat []time.Duration
		tick := time.NewTicker(time.Second / 60)
		defer tick.Stop()
		from := len(b.Messages())
		x := 0
		for i := 0; len(lat) < n; i++ {
			<-tick.C
			if cursors {
				x++
				if err := aConn.c.SendEphemeral(ctx, fmt.Appendf(nil, `{"t":"eph","room":"c","key":"cursor","data":{"x":%d}}`, x)); err != nil {
					t.Fatal(err)
				}
			}
			if i%6 == 0 {
				cid := fmt.Sprintf("p%v-%d", cursors, i)
				sent := time.Now()
				a.Send(ctx, map[string]any{"t": "pub", "room": "c", "cid": cid, "data": i})
				b.WaitFor(ctx, &from, "event "+cid, func(m *roomtest.Msg) bool { return m.T == "event" && m.CID == cid })
				lat = append(lat, time.Since(sent))
			}
		}
		if cursors {
			// The receiver ends on the latest value (values carry x, so
			// a receiver keeps the highest it has seen).
			want := fmt.Sprintf(`{"x":%d}`, x)
			efrom := 0
			b.WaitFor(ctx, &efrom, "the latest cursor", func(m *roomtest.Msg) bool { return m.T == "eph" && string(m.Data) == want })
			n := 0
			for _, m := range b.Messages() {
				if m.T == "eph" {
					n++
				}
			}
			t.Logf("cursor values: %d sent at 60 Hz, %d received, the last one %s", x, n, want)
		}
		return lat
	}
	quiet := pubs(20, false)
	busy := pubs(20, true)
	q50, q100 := pct(quiet, 50), pct(quiet, 100)
	b50, b100 := pct(busy, 50), pct(busy, 100)
	t.Logf("durable pub→event latency without cursors: p50 %v, max %v; with the 60 Hz stream: p50 %v, max %v", q50, q100, b50, b100)
	if b50 > q50+20*time.Millisecond || b100 > 250*time.Millisecond {
		t.Errorf("durable messages were delayed by the cursor stream")
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i].Round(10 * time.Microsecond)
}

// Figures: DataChannel echo latency through the room layer (ping→pong and
// pub→ok) and durable throughput (pub at a → event at b). Gated: run with
//
//	RW_BENCH=1 go test -run TestFigures -v ./transport/rtcdc/
//
// (add -race to check the code, not to read the figures).
func TestFigures(t *testing.T) {
	if os.Getenv("RW_BENCH") == "" {
		t.Skip("set RW_BENCH=1 for the figures")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*roomtest.Timeout)
	defer cancel()
	srv, _, _ := server(t, roomtest.Config{MaxQueueBytes: 64 << 20}, &room.Options{Rate: 1e9, Burst: 1 << 30}, nil)
	// Each client too reads through its own UDP mux with a large receive
	// buffer (a server's mux tells peers apart by address).
	apiWithMux := func() *webrtc.API {
		mux, err := signaling.ListenUDP("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mux.Close() })
		api, err := signaling.NewAPI(&signaling.APIOptions{UDPMux: mux, IncludeLoopback: true, AllowLocalIP: signaling.LoopbackOnly, AllowRemoteIP: signaling.LoopbackOnly})
		if err != nil {
			t.Fatal(err)
		}
		return api
	}
	apis := []*webrtc.API{apiWithMux(), apiWithMux()}
	dialer := func(api *webrtc.API) roomtest.Dialer {
		return func(ctx context.Context) (roomtest.Conn, error) { return dial(ctx, t, api, srv.URL) }
	}
	a := roomtest.Connect(ctx, t, dialer(apis[0]), "a", nil)
	b := roomtest.Connect(ctx, t, dialer(apis[1]), "b", nil)
	a.Join(ctx, "f", nil)
	b.Join(ctx, "f", nil)

	const n = 2000
	var ping, pub []time.Duration
	from := len(a.Messages())
	for i := range n {
		start := time.Now()
		a.Send(ctx, map[string]any{"t": "ping", "data": i})
		a.WaitFor(ctx, &from, "pong", func(m *roomtest.Msg) bool { return m.T == "pong" && string(m.Data) == fmt.Sprint(i) })
		ping = append(ping, time.Since(start))
	}
	for range n {
		start := time.Now()
		a.Request(ctx, map[string]any{"t": "pub", "room": "f", "data": 1})
		pub = append(pub, time.Since(start))
	}
	t.Logf("echo ping→pong over %d round trips: p50 %v, p99 %v", n, pct(ping, 50), pct(ping, 99))
	t.Logf("echo pub→ok (durable, through the room log) over %d: p50 %v, p99 %v", n, pct(pub, 50), pct(pub, 99))

	const m, size = 20000, 1024
	data := make([]byte, size)
	for i := range data {
		data[i] = 'x'
	}
	bFrom := len(b.Messages())
	start := time.Now()
	go func() {
		for i := range m {
			a.Send(ctx, map[string]any{"t": "pub", "room": "f", "data": string(data), "cid": fmt.Sprint("t", i)})
		}
	}()
	got := 0
	b.WaitFor(ctx, &bFrom, "every event", func(msg *roomtest.Msg) bool {
		if msg.T == "event" && len(msg.CID) > 0 && msg.CID[0] == 't' {
			got++
		}
		return got == m
	})
	el := time.Since(start)
	t.Logf("throughput: %d pubs of %d B from a reached b in %v: %.0f msg/s, %.1f Mbit/s of payload", m, size, el.Round(time.Millisecond), float64(m)/el.Seconds(), float64(m*size*8)/el.Seconds()/1e6)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
