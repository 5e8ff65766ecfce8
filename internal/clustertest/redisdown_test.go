package clustertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room/roomtest"
)

// TestRedisRestart: Redis (append-only file, fsync always) is killed with
// SIGKILL during traffic from clients on three nodes, and restarted once a
// client has been refused. While it is down, patches and publishes fail
// with "internal"; the clients retry with the same cid, as the protocol
// says. In the end every client has seen every room seq exactly once, in
// one order; every message is in the log exactly once; every node has the
// same document, holding every patch.
func TestRedisRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, &clustertest.RedisOptions{AppendOnly: true})
	var nodes []*clustertest.Node
	for range 3 {
		nodes = append(nodes, node(t, srv, clustertest.NodeConfig{}))
	}
	var clients []*roomtest.Client
	for i := range 6 {
		c := roomtest.Connect(ctx, t, nodes[i%3].Dialer(), fmt.Sprint("c", i), nil)
		c.Join(ctx, "r", nil)
		clients = append(clients, c)
	}
	const perClient = 200
	var acked, refused atomic.Int64
	outage, refusal := make(chan struct{}), make(chan struct{})
	var refusedOnce sync.Once
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			from := 0
			retry := time.NewTimer(0)
			defer retry.Stop()
			for k := 1; k <= perClient; {
				cid := fmt.Sprintf("c%d-%d", i, k)
				msg := map[string]any{"t": "pub", "room": "r", "cid": cid, "data": k}
				if k%5 == 0 {
					msg = map[string]any{"t": "patch", "room": "r", "cid": cid, "base": 0,
						"ops": json.RawMessage(fmt.Sprintf(`[{"op":"add","path":"/%s","value":%d}]`, cid, k))}
				}
				c.Send(ctx, msg)
				m := c.WaitFor(ctx, &from, "reply "+cid, func(m *roomtest.Msg) bool { return m.CID == cid && (m.T == "ok" || m.T == "error") })
				if m.T == "error" {
					if m.Code != "internal" {
						t.Errorf("%s: %s", cid, m.Raw)
						return
					}
					refused.Add(1)
					refusedOnce.Do(func() { close(refusal) })
					retry.Reset(20 * time.Millisecond) // the protocol's backoff
					select {
					case <-retry.C:
					case <-ctx.Done():
						t.Errorf("%s: %v", cid, ctx.Err())
						return
					}
					continue
				}
				if acked.Add(1) == 300 {
					close(outage)
				}
				k++
			}
		})
	}
	<-outage
	srv.Kill()
	select {
	case <-refusal:
	case <-ctx.Done():
		t.Fatal("no client was refused while Redis was down")
	}
	srv.Restart()
	wg.Wait()
	if t.Failed() {
		return
	}
	fence := clustertest.U64(clients[0].Request(ctx, map[string]any{"t": "pub", "room": "r", "data": "fence"}).Seq)
	var first []string
	for _, c := range clients {
		from := 0
		c.WaitFor(ctx, &from, "the fence", func(m *roomtest.Msg) bool {
			return m.T == "event" && clustertest.U64(m.Seq) == fence || m.T == "ok" && clustertest.U64(m.Seq) == fence
		})
		bySeq := make([]string, fence+1)
		for _, m := range c.Messages() {
			if m.Room != "r" || m.Seq == nil || (m.T != "ok" && m.T != "event" && m.T != "patch") {
				continue
			}
			s := clustertest.U64(m.Seq)
			if s == 0 || s > fence {
				continue
			}
			if bySeq[s] != "" && bySeq[s] != m.CID {
				t.Fatalf("seq %d is %s and %s", s, bySeq[s], m.CID)
			}
			bySeq[s] = m.CID
		}
		if i := slices.Index(bySeq[1:], ""); i >= 0 {
			t.Fatalf("seq %d missing", i+1)
		}
		if first == nil {
			first = bySeq
		} else if !slices.Equal(first, bySeq) {
			t.Fatal("two clients disagree on the order")
		}
	}
	seen := map[string]bool{}
	for _, cid := range first[1 : len(first)-1] {
		if seen[cid] {
			t.Fatalf("%s is in the log twice", cid)
		}
		seen[cid] = true
	}
	if len(seen) != 6*perClient {
		t.Fatalf("%d messages in the log, want %d", len(seen), 6*perClient)
	}
	doc0, v0, _, _ := nodes[0].Hub.Snapshot("r")
	var doc map[string]int
	json.Unmarshal(doc0, &doc)
	if len(doc) != 6*perClient/5 || v0 != uint64(len(doc)) {
		t.Fatalf("document has %d keys at version %d, want %d", len(doc), v0, 6*perClient/5)
	}
	for i, n := range nodes[1:] {
		if d, v, _, _ := n.Hub.Snapshot("r"); string(d) != string(doc0) || v != v0 {
			t.Fatalf("node %d differs: v%d", i+1, v)
		}
	}
	t.Logf("%d messages, %d refusals while Redis was down, all settled once", len(seen), refused.Load())
}

// TestRedisDataLoss: Redis restarts without its data. A node notices (the
// room's epoch is gone) and refuses further writes to the room with
// "internal" instead of numbering new entries from 1 under the old
// replica; a room subscribed afresh starts from Redis's (empty) state.
func TestRedisDataLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, nil)
	n := node(t, srv, clustertest.NodeConfig{})
	a := roomtest.Connect(ctx, t, n.Dialer(), "a", nil)
	a.Join(ctx, "lost", nil)
	for i := range 5 {
		if r := a.Request(ctx, map[string]any{"t": "pub", "room": "lost", "data": i}); r.T != "ok" {
			t.Fatal(string(r.Raw))
		}
	}
	srv.Restart() // kill -9 and start: nothing was saved
	for {
		r := a.Request(ctx, map[string]any{"t": "pub", "room": "lost", "data": "after"})
		if r.T == "ok" {
			t.Fatalf("an append after the data loss was accepted: %s", r.Raw)
		}
		if r.Code != "internal" {
			t.Fatalf("want internal, got %s", r.Raw)
		}
		if strings.Contains(r.Text, "lost") {
			break // refused because the state is gone, not (only) because Redis was unreachable
		}
	}
	b := roomtest.Connect(ctx, t, n.Dialer(), "b", nil)
	if j := b.Join(ctx, "fresh", nil); j.Mode != "snapshot" || clustertest.U64(j.Seq) != 0 {
		t.Fatalf("fresh room: %s", j.Raw)
	}
	if r := b.Request(ctx, map[string]any{"t": "pub", "room": "fresh", "data": 1}); r.T != "ok" {
		t.Fatalf("fresh room after the loss: %s", r.Raw)
	}
}
