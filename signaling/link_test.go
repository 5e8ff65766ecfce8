package signaling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/roomwire/roomwire/signaling"
)

// Two members negotiate a direct DataChannel through signal messages and
// exchange 1000 messages over it; the server relays none of them.
func TestLinkDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, a, b := pair(ctx, t)
	api := loopbackAPI(t, nil)
	la := a.link(t, api, "r", b.SID, nil)
	lb := b.link(t, api, "r", a.SID, nil)
	start := time.Now()
	for _, l := range []*signaling.Link{la, lb} {
		if err := l.WaitPath(ctx, signaling.PathDirect); err != nil {
			t.Fatalf("direct path: %v", err)
		}
	}
	t.Logf("direct path open after %v; %d and %d signals exchanged", time.Since(start).Round(time.Millisecond), a.signals.Load(), b.signals.Load())
	const n = 1000
	go func() {
		for i := 1; i <= n; i++ {
			if err := la.Send(ctx, payload(i)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	recvN(ctx, t, lb, n)
	// And back, so that acknowledgements have flowed both ways.
	if err := lb.Send(ctx, payload(1)); err != nil {
		t.Fatal(err)
	}
	recvN(ctx, t, la, 1)
	sa, sb := la.Stats(), lb.Stats()
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)
	if sa.SentDirect != n || sa.SentRelay != 0 || sb.RecvDirect != n || sb.RecvRelay != 0 {
		t.Errorf("not all direct: a %+v, b %+v", sa, sb)
	}
	if got := a.relays.Load() + b.relays.Load(); got != 0 {
		t.Errorf("the server relayed %d messages", got)
	}
}

// A pair whose ICE cannot connect (b drops every remote candidate, so no
// check ever succeeds) delivers everything through the relay, in order,
// from the first message on: messages never wait for the direct path.
func TestLinkICEFailsRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, a, b := pair(ctx, t)
	const connectTimeout = 2 * time.Second
	short := func(o *signaling.LinkOptions) { o.ConnectTimeout = connectTimeout }
	la := a.link(t, loopbackAPI(t, nil), "r", b.SID, short)
	lb := b.link(t, loopbackAPI(t, func(net.IP) bool { return false }), "r", a.SID, short)
	const n = 300
	start := time.Now()
	go func() {
		for i := 1; i <= n; i++ {
			if err := la.Send(ctx, payload(i)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	first, err := lb.Recv(ctx)
	if err != nil || string(first.Data) != `{"i":1}` || first.Direct {
		t.Fatalf("first message: %+v %v", first, err)
	}
	t.Logf("first message through the relay after %v", time.Since(start).Round(time.Millisecond))
	recvRange(ctx, t, lb, 2, n)
	if p := la.Path(); p != signaling.PathRelay {
		t.Fatalf("path %v", p)
	}
	st := la.Stats()
	t.Logf("all %d delivered through the relay in %v; a: %+v", n, time.Since(start).Round(time.Millisecond), st)
	if st.SentDirect != 0 || st.SentRelay != n {
		t.Errorf("stats %+v", st)
	}
}

// dropConn is a UDP socket that can be made to lose every packet, both
// ways, without telling anyone: a network that dies silently.
type dropConn struct {
	*net.UDPConn
	drop atomic.Bool
}

func (c *dropConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(p)
		if err != nil || !c.drop.Load() {
			return n, addr, err
		}
	}
}

func (c *dropConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		return len(p), nil
	}
	return c.UDPConn.WriteTo(p, addr)
}

// The direct path dies silently in the middle of a stream: the link notices
// through ICE (DisconnectedTimeout), sends every unacknowledged message
// again through the relay, and the receiver gets all of them once, in
// order.
func TestLinkDirectDiesMidStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, a, b := pair(ctx, t)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dc := &dropConn{UDPConn: udp}
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: dc})
	defer mux.Close()
	const disconnected = time.Second
	bAPI, err := signaling.NewAPI(&signaling.APIOptions{
		UDPMux: mux, IncludeLoopback: true, AllowLocalIP: signaling.LoopbackOnly, AllowRemoteIP: signaling.LoopbackOnly,
		DisconnectedTimeout: disconnected, FailedTimeout: time.Second, KeepAlive: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	la := a.link(t, loopbackAPI(t, nil), "r", b.SID, nil)
	lb := b.link(t, bAPI, "r", a.SID, nil)
	for _, l := range []*signaling.Link{la, lb} {
		if err := l.WaitPath(ctx, signaling.PathDirect); err != nil {
			t.Fatalf("direct path: %v", err)
		}
	}
	const n, cut = 1000, 300
	go func() {
		for i := 1; i <= n; i++ {
			if err := la.Send(ctx, payload(i)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	recvN(ctx, t, lb, cut)
	dc.drop.Store(true)
	cutAt := time.Now()
	var firstRelay time.Duration
	for i := cut + 1; i <= n; i++ {
		m, err := lb.Recv(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(m.Data) != string(payload(i)) {
			t.Fatalf("message %d: got %s", i, m.Data)
		}
		if !m.Direct && firstRelay == 0 {
			firstRelay = time.Since(cutAt)
		}
	}
	sa, sb := la.Stats(), lb.Stats()
	t.Logf("path cut after %d messages; first message through the relay %v later; all %d delivered once, in order", cut, firstRelay.Round(time.Millisecond), n)
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)
	if firstRelay == 0 || firstRelay > disconnected+2*time.Second {
		t.Errorf("fallback took %v, over the bound DisconnectedTimeout (%v) + 2 s", firstRelay, disconnected)
	}
	if sb.RecvDirect+sb.RecvRelay != n {
		t.Errorf("accepted %d+%d messages, want %d", sb.RecvDirect, sb.RecvRelay, n)
	}
	if la.Path() != signaling.PathRelay {
		t.Errorf("a's path is %v after the cut", la.Path())
	}
}

// A link to a session outside the room (a member of another room, or no
// session at all) is refused by the server: the link ends with not_member
// and nothing reaches the other session.
func TestLinkRefusedNotMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	srv, a, b := pair(ctx, t)
	o := connect(ctx, t, srv, "outsider")
	o.join(ctx, "other")
	api := loopbackAPI(t, nil)
	for _, tc := range []struct{ name, room, to string }{
		{"member of another room", "r", o.SID},
		{"no such session", "r", "nobody"},
		{"room the sender is not in", "other", o.SID},
	} {
		l := a.link(t, api, tc.room, tc.to, func(lo *signaling.LinkOptions) { lo.ConnectTimeout = time.Minute })
		// Whichever side offers, a data message goes out at once.
		l.Send(ctx, payload(1))
		select {
		case <-l.Done():
		case <-ctx.Done():
			t.Fatalf("%s: the link was not refused", tc.name)
		}
		if err := l.Err(); err == nil || !strings.Contains(err.Error(), "not_member") {
			t.Errorf("%s: link error %v, want not_member", tc.name, err)
		}
		if err := l.Send(ctx, payload(2)); err == nil {
			t.Errorf("%s: Send on a refused link succeeded", tc.name)
		}
	}
	// Fences: everything a sent was handled before its error replies, so
	// anything forwarded would have reached o and b before their own oks.
	for _, m := range []*member{o, b} {
		r := "other"
		if m == b {
			r = "r"
		}
		m.Send(ctx, []byte(`{"t":"pub","room":"`+r+`","cid":"fence","data":1}`))
		m.waitFor(ctx, "fence", func(msg map[string]any) bool { return msg["t"] == "ok" && msg["cid"] == "fence" })
	}
	if s, r := o.signals.Load(), o.relays.Load(); s != 0 || r != 0 {
		t.Errorf("the outsider received %d signals and %d relays", s, r)
	}
	if s, r := b.signals.Load(), b.relays.Load(); s != 0 || r != 0 {
		t.Errorf("b received %d signals and %d relays", s, r)
	}
}

// A 60 Hz cursor stream over the link's unordered channel, with durable
// messages in between: the receiver ends on the latest value, never goes
// back, and the durable messages are not held up.
func TestLinkCursorStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, a, b := pair(ctx, t)
	api := loopbackAPI(t, nil)
	la := a.link(t, api, "r", b.SID, nil)
	lb := b.link(t, api, "r", a.SID, nil)
	for _, l := range []*signaling.Link{la, lb} {
		if err := l.WaitPath(ctx, signaling.PathDirect); err != nil {
			t.Fatal(err)
		}
	}
	const ticks = 120
	// The receiver runs alongside the sender and notes arrival times.
	type arrival struct {
		i  int
		at time.Time
	}
	var got []arrival
	lastCursor, cursors := 0, 0
	recvDone := make(chan error, 1)
	go func() {
		for lastCursor < ticks || len(got) < ticks/10 {
			m, err := lb.Recv(ctx)
			if err != nil {
				recvDone <- fmt.Errorf("cursor %d, durable %d: %v", lastCursor, len(got), err)
				return
			}
			var v struct{ I int }
			json.Unmarshal(m.Data, &v)
			if m.Key == "cursor" {
				if v.I <= lastCursor {
					recvDone <- fmt.Errorf("cursor went back from %d to %d", lastCursor, v.I)
					return
				}
				lastCursor, cursors = v.I, cursors+1
				continue
			}
			if v.I != len(got)+1 {
				recvDone <- fmt.Errorf("durable %d: got %s", len(got)+1, m.Data)
				return
			}
			got = append(got, arrival{v.I, time.Now()})
		}
		recvDone <- nil
	}()
	tick := time.NewTicker(time.Second / 60)
	defer tick.Stop()
	sentAt := make([]time.Time, ticks/10+1)
	for i := 1; i <= ticks; i++ {
		<-tick.C
		if err := la.SendEphemeral(ctx, "cursor", payload(i)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			sentAt[i/10] = time.Now()
			if err := la.Send(ctx, payload(i/10)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-recvDone; err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for _, a := range got {
		lat = append(lat, a.at.Sub(sentAt[a.i]))
	}
	slices.Sort(lat)
	st := la.Stats()
	t.Logf("%d cursor values sent at 60 Hz (%d direct, %d relay), %d received, the last %d; durable latency p50 %v, max %v", ticks, st.EphDirect, st.EphRelay, cursors, lastCursor, lat[len(lat)/2], lat[len(lat)-1])
	if st.EphRelay != 0 {
		t.Errorf("cursor values went through the relay: %+v", st)
	}
}
