package signaling_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomwire/roomwire/signaling"
)

// Figures for a direct link: echo latency (a → b → a, both over the
// direct channel) and one-way throughput. Gated: run with
//
//	RW_BENCH=1 go test -run TestLinkFigures -v ./signaling/
func TestLinkFigures(t *testing.T) {
	if os.Getenv("RW_BENCH") == "" {
		t.Skip("set RW_BENCH=1 for the figures")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	_, a, b := pair(ctx, t)
	// A UDP mux with a large receive buffer on each side.
	apiFor := func() *signaling.APIOptions {
		mux, err := signaling.ListenUDP("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mux.Close() })
		return &signaling.APIOptions{UDPMux: mux, IncludeLoopback: true, AllowLocalIP: signaling.LoopbackOnly, AllowRemoteIP: signaling.LoopbackOnly}
	}
	apiA, err := signaling.NewAPI(apiFor())
	if err != nil {
		t.Fatal(err)
	}
	apiB, err := signaling.NewAPI(apiFor())
	if err != nil {
		t.Fatal(err)
	}
	la := a.link(t, apiA, "r", b.SID, nil)
	lb := b.link(t, apiB, "r", a.SID, nil)
	for _, l := range []*signaling.Link{la, lb} {
		if err := l.WaitPath(ctx, signaling.PathDirect); err != nil {
			t.Fatal(err)
		}
	}
	const n = 2000
	var rtt []time.Duration
	for i := range n {
		start := time.Now()
		if err := la.Send(ctx, payload(i)); err != nil {
			t.Fatal(err)
		}
		m, err := lb.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := lb.Send(ctx, m.Data); err != nil {
			t.Fatal(err)
		}
		if _, err := la.Recv(ctx); err != nil {
			t.Fatal(err)
		}
		rtt = append(rtt, time.Since(start))
	}
	slices.Sort(rtt)
	t.Logf("direct link echo over %d round trips: p50 %v, p99 %v", n, rtt[n/2], rtt[n*99/100])

	const m, size = 50000, 1024
	data := json.RawMessage(`"` + strings.Repeat("x", size-2) + `"`)
	start := time.Now()
	go func() {
		for range m {
			if err := la.Send(ctx, data); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range m {
		if _, err := lb.Recv(ctx); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	el := time.Since(start)
	t.Logf("direct link throughput: %d messages of %d B in %v: %.0f msg/s, %.1f Mbit/s; a %+v", m, size, el.Round(time.Millisecond), float64(m)/el.Seconds(), float64(m*size*8)/el.Seconds()/1e6, la.Stats())
	if a.relays.Load()+b.relays.Load() != 0 {
		t.Errorf("relayed: %d", a.relays.Load()+b.relays.Load())
	}
}
