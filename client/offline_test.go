package client_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/longpoll"
)

// TestOfflineTenSeconds, over each transport: a client whose answers from
// the server are lost (oks, and on HTTP the 204s of its sends), then whose
// acknowledgements are lost, then which is cut off for 10 s while the room
// receives 500 durable messages and it queues 10 of its own, comes back
// and has every message exactly once, in order; its own messages are
// applied exactly once. The resume window (30 s) exceeds the cut.
func TestOfflineTenSeconds(t *testing.T) {
	const cut, total = 10 * time.Second, 500
	srv := newServer(t, nil, &transport.Options{
		ResumeWindow: 30 * time.Second,
		LongPoll:     longpoll.Options{Hold: 5 * time.Second},
	})
	for _, tr := range allTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := deadline(t, 90*time.Second)
			px := newProxy(t, srv.addr())
			o := forced("a-"+tr, tr)
			o.MinBackoff, o.MaxBackoff = 50*time.Millisecond, time.Second
			a := dial(ctx, t, px.url(), o)
			sseq := watchSSeq(a)
			b := dial(ctx, t, srv.http.URL, fastOptions("b-"+tr))
			name := "offline-" + tr
			ra, rb := join(ctx, t, a, name), join(ctx, t, b, name)
			ea, eb := collect(ra), collect(rb)
			sid := a.Stats().SessionID

			// 1. The server applies a1..a5 (over HTTP, at least a1: a
			// send waits for the answer to the one before), but its
			// answers never reach a.
			ea.wait(ctx, t, "a sees b join", func(all []client.Event) bool { return count(all, client.EventMemberJoin) == 1 })
			check(t, client.WaitWriterIdle(ctx, a))
			px.hold()
			for i := 1; i <= 5; i++ {
				check(t, ra.Publish(json.RawMessage(fmt.Sprintf(`"a%d"`, i))))
			}
			eb.wait(ctx, t, "b sees a1..", func(all []client.Event) bool {
				n := count(all, client.EventPublish)
				return n == 5 || tr != client.TransportWS && n >= 1
			})
			px.cut()
			check(t, ra.Settle(ctx)) // a resends them, with their cids; the server answers with the first oks

			// 2. a receives x1..x3 but its acknowledgements never reach
			// the server. (Over long-polling the acknowledgement is the
			// next poll, and whether one was held at the server when the
			// upstream stopped is up to timing: a lost answer to a poll,
			// step 1, is the case that matters there.)
			px.holdUp()
			for i := 1; i <= 3; i++ {
				check(t, rb.Publish(json.RawMessage(fmt.Sprintf(`"x%d"`, i))))
			}
			if tr != client.TransportLongPoll {
				ea.wait(ctx, t, "a sees x1..x3", func(all []client.Event) bool { return count(all, client.EventPublish) >= 3 })
			}

			// 3. Cut off for 10 s.
			px.setRefuse(true)
			px.cut()
			offline := time.NewTimer(cut)
			defer offline.Stop()
			waitState(ctx, t, a, client.StateDisconnected)
			for i := 1; i <= total; i++ {
				check(t, rb.Publish(json.RawMessage(fmt.Sprintf(`"b%d"`, i))))
				if i%100 == 0 {
					check(t, rb.Settle(ctx)) // within b's rate limit
				}
			}
			for i := 6; i <= 15; i++ {
				check(t, ra.Publish(json.RawMessage(fmt.Sprintf(`"a%d"`, i))))
			}
			select {
			case <-offline.C: // the length of the cut, not a synchronisation
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
			if st := a.State(); st == client.StateConnected {
				t.Fatalf("a connected through a refusing proxy")
			}
			t0 := time.Now()
			px.setRefuse(false)

			// 4. Back: everything, once, in order.
			check(t, ra.Settle(ctx))
			converged(ctx, t, srv, name, ra, rb)
			back := time.Since(t0)
			want := append(seqStrings("x", 1, 3), seqStrings("b", 1, total)...)
			ea.wait(ctx, t, "a gets everything", func(all []client.Event) bool { return count(all, client.EventPublish) >= len(want) })
			if got := publishes(t, "a", ea.snapshot()); !equalStrings(got, want) {
				t.Errorf("a received %d publications, not x1..x3 b1..b%d once each in order", len(got), total)
			}
			eb.wait(ctx, t, "b gets a's messages", func(all []client.Event) bool { return count(all, client.EventPublish) >= 15 })
			// a1..a5 were on the way when the connection was first cut
			// (see exactlyOnce); a6..a15 were sent after the 10 s, in
			// order.
			got := publishes(t, "b", eb.snapshot())
			exactlyOnce(t, "b", got, seqStrings("a", 1, 15), seqStrings("a", 6, 15))
			if len(got) < 5 || !equalStrings(got[5:], seqStrings("a", 6, 15)) {
				t.Errorf("b received %v: a6..a15 before one of a1..a5", got)
			}
			for _, ev := range eb.snapshot() {
				if ev.Kind == client.EventMemberLeave {
					t.Errorf("b saw a member leave: %+v", ev)
				}
			}
			sseq.check(t)
			st := a.Stats()
			if st.SessionID != sid || st.Transport != tr {
				t.Errorf("a's stats %+v: want session %s throughout, over %s", st, sid, tr)
			}
			t.Logf("%s: back %v after the 10 s cut, with all %d messages; %d sessions, %d resumes, %d drops",
				tr, back.Round(time.Millisecond), len(want), st.Sessions, st.Resumes, st.Drops)
		})
	}
}
