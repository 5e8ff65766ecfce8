package client_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/longpoll"
	"github.com/roomwire/roomwire/transport/sse"
)

var allTransports = []string{client.TransportWS, client.TransportSSE, client.TransportLongPoll}

// forced returns fastOptions that use only transport tr.
func forced(user, tr string) *client.Options {
	o := fastOptions(user)
	o.Transports = []string{tr}
	return o
}

// TestEveryTransport: over each transport, a client joins, patches,
// publishes and sets ephemeral values that a WebSocket member sees, and
// gets 1 MB of the other's messages in order, acknowledging as it goes:
// the server's outbox (256 KiB here) never overflows. Cut off, it resumes
// its session on the same transport.
func TestEveryTransport(t *testing.T) {
	for _, tr := range allTransports {
		t.Run(tr, func(t *testing.T) {
			ctx := deadline(t, 60*time.Second)
			srv := newServer(t, nil, &transport.Options{
				MaxQueueBytes: 256 << 10,
				LongPoll:      longpoll.Options{Hold: 2 * time.Second},
				SSE:           sse.Options{KeepAlive: time.Second},
			})
			px := newProxy(t, srv.addr())
			a := dial(ctx, t, px.url(), forced("a", tr))
			b := dial(ctx, t, srv.http.URL, forced("b", client.TransportWS))
			if got := a.Stats().Transport; got != tr {
				t.Fatalf("a connected over %q, want %q", got, tr)
			}
			ra, rb := join(ctx, t, a, "e"), join(ctx, t, b, "e")
			ea, eb := collect(ra), collect(rb)
			if m := rb.Members(); len(m) != 2 || m[0].Transport == m[1].Transport && tr != client.TransportWS {
				t.Errorf("members seen by b: %+v", m)
			}

			check(t, ra.Patch(json.RawMessage(`[{"op":"add","path":"/from","value":"`+tr+`"}]`)))
			check(t, ra.Publish(json.RawMessage(`"hello from `+tr+`"`)))
			check(t, ra.SetEphemeral("cursor", json.RawMessage(`{"x":1}`)))
			eb.wait(ctx, t, "b sees a's patch, event and cursor", func(all []client.Event) bool {
				return count(all, client.EventPatch) == 1 && count(all, client.EventPublish) == 1 && count(all, client.EventEphemeral) >= 1
			})
			converged(ctx, t, srv, "e", ra, rb)

			const n = 1000
			pad := strings.Repeat("p", 1000)
			// In batches of 100 (100 KB), each sent once a has the last:
			// a client that keeps up but does not acknowledge would have
			// all 1 MB in its outbox, over the bound.
			for i := 1; i <= n; i++ {
				check(t, rb.Publish(json.RawMessage(fmt.Sprintf(`"b%d%s"`, i, pad))))
				if i%100 == 0 {
					ea.wait(ctx, t, "a gets b's messages", func(all []client.Event) bool { return count(all, client.EventPublish) == i })
				}
			}
			for i, got := range publishes(t, "a", ea.snapshot()) {
				if want := fmt.Sprintf(`"b%d%s"`, i+1, pad); got != want {
					t.Fatalf("a's event %d: %.20s, want %.20s", i, got, want)
				}
			}
			if st := a.Stats(); st.Drops != 0 {
				t.Fatalf("a dropped while receiving (acks too slow?): %+v", st)
			}

			sid := a.Stats().SessionID
			px.setRefuse(true)
			px.cut()
			waitState(ctx, t, a, client.StateDisconnected)
			check(t, ra.Publish(json.RawMessage(`"after the cut"`)))
			px.setRefuse(false)
			eb.wait(ctx, t, "b sees a's message after the cut", func(all []client.Event) bool { return count(all, client.EventPublish) == 2 })
			converged(ctx, t, srv, "e", ra, rb)
			if st := a.Stats(); st.SessionID != sid || st.Resumes != 1 || st.Transport != tr {
				t.Errorf("after the cut: %+v; want session %s resumed once over %s", st, sid, tr)
			}
		})
	}
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// eachTransport runs f as a subtest for each transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range allTransports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// TestCloseReleasesConnections: a client on an HTTP transport that closes
// leaves no goroutine behind (no kept-alive connection waiting for its idle
// timeout), while the server is still up.
func TestCloseReleasesConnections(t *testing.T) {
	for _, tr := range []string{client.TransportSSE, client.TransportLongPoll} {
		t.Run(tr, func(t *testing.T) {
			ctx := deadline(t, 20*time.Second)
			srv := newServer(t, nil, nil)
			before := goleak.IgnoreCurrent()
			c, err := client.Dial(ctx, srv.http.URL, forced("c", tr))
			check(t, err)
			r := join(ctx, t, c, "bye")
			check(t, r.Publish(json.RawMessage(`1`)))
			check(t, r.Settle(ctx))
			c.Close()
			// The server keeps its side of the connections open.
			goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("net/http.(*conn).serve"))
		})
	}
}
