package clustertest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/room/roomtest"
)

// TestNodeKill9: three nodes share one Redis; node A is a child process.
// Clients on every node publish into one room; once 400 messages are
// acknowledged, A is killed with SIGKILL. A's clients reconnect to node B
// (a new session: sessions live on one node, so resume cannot cross
// nodes), rejoin with since = the last room seq they saw, and resend what
// was not acknowledged with the same cid. In the end every client has seen
// every room seq exactly once, all agree on the order, and every message
// is in the log exactly once. Every node runs cross-node presence: A's
// members, listed by the other nodes while A lived, leave for the clients
// there within the documented bound (TTL + Interval of A's last heartbeat),
// and a later join lists exactly the live members.
func TestNodeKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, nil)
	popts := &redisbroker.PresenceOptions{TTL: 2 * time.Second, Interval: 500 * time.Millisecond}
	child := clustertest.StartChildRedis(t, srv.Addr(), "rw", popts)
	nb := presenceNode(t, srv, clustertest.NodeConfig{}, popts)
	nc := presenceNode(t, srv, clustertest.NodeConfig{}, popts)

	type client struct {
		name     string
		url      string // where it connects first
		fallback string
		peers    []*clustertest.Peer
	}
	var clients []*client
	for i, url := range []string{child.WSURL(), child.WSURL(), nb.WSURL(), nb.WSURL(), nc.WSURL(), nc.WSURL()} {
		clients = append(clients, &client{name: fmt.Sprint("c", i), url: url, fallback: nb.WSURL()})
	}
	join := func(c *client, url string, since *uint64) error {
		p, err := clustertest.ConnectPeer(ctx, url, c.name, nil)
		if err != nil {
			return err
		}
		c.peers = append(c.peers, p)
		m := map[string]any{"t": "join", "room": "k", "cid": "join"}
		if since != nil {
			m["since"] = *since
		}
		if err := p.Send(ctx, m); err != nil {
			return err
		}
		from := 0
		j, err := p.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.T == "joined" || m.T == "error" })
		if err == nil && (j.T != "joined" || (since != nil && j.Mode != "replay")) {
			err = fmt.Errorf("join: %s", j.Raw)
		}
		return err
	}
	for _, c := range clients {
		if err := join(c, c.url, nil); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, c := range clients {
			for _, p := range c.peers {
				p.Close()
			}
		}
	}()

	// The clients on B and C see A's two members, through presence: in
	// their joined reply or as a presence join.
	dead := []string{clients[0].peers[0].SID, clients[1].peers[0].SID}
	watchers := []*clustertest.Peer{clients[2].peers[0], clients[5].peers[0]}
	for _, w := range watchers {
		for _, sid := range dead {
			from := 0
			if _, err := w.Wait(ctx, &from, func(m *roomtest.Msg) bool {
				if m.Room != "k" {
					return false
				}
				if m.T == "presence" {
					return m.Event == "join" && m.Member != nil && m.Member.SID == sid
				}
				return m.T == "joined" && slices.ContainsFunc(m.Members, func(mb roomtest.Member) bool { return mb.SID == sid })
			}); err != nil {
				t.Fatalf("%s never listed %s: %v", w.SID, sid, err)
			}
		}
	}

	const perClient = 300
	var acked atomic.Int64
	killNow := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			p := c.peers[0]
			from := 0
			for k := 1; k <= perClient; {
				cid := fmt.Sprintf("%s-%d", c.name, k)
				err := p.Send(ctx, map[string]any{"t": "pub", "room": "k", "cid": cid, "data": k})
				var m *roomtest.Msg
				if err == nil {
					// An ok settles it, and so does the entry carrying
					// the cid (committed by an earlier session).
					m, err = p.Wait(ctx, &from, func(m *roomtest.Msg) bool {
						return m.CID == cid && (m.T == "ok" || m.T == "event" || m.T == "error")
					})
				}
				if err != nil {
					if ctx.Err() != nil {
						t.Errorf("%s: %v", c.name, err)
						return
					}
					since := maxSeq(p)
					if err := join(c, c.fallback, &since); err != nil {
						t.Errorf("%s: rejoining on another node: %v", c.name, err)
						return
					}
					p, from = c.peers[len(c.peers)-1], 0
					continue // resend the same cid
				}
				if m.T == "error" {
					if m.Code == "internal" {
						continue
					}
					t.Errorf("%s: %s", c.name, m.Raw)
					return
				}
				if acked.Add(1) == 400 {
					close(killNow)
				}
				k++
			}
		})
	}
	select {
	case <-killNow:
	case <-ctx.Done():
		t.Fatal("400 acks never came")
	}
	killed := time.Now()
	child.Kill()
	// A's members leave for the watchers within TTL + Interval: A's last
	// heartbeat was at most Interval before the kill, so it is declared
	// dead at most TTL after the kill, and each live node reaps every
	// Interval. presenceSlack covers delivery and a loaded machine.
	bound := popts.TTL + popts.Interval
	var pwg sync.WaitGroup
	var slowest atomic.Int64
	for _, w := range watchers {
		for _, sid := range dead {
			pwg.Go(func() {
				from := 0
				if _, err := w.Wait(ctx, &from, func(m *roomtest.Msg) bool {
					return m.Room == "k" && m.T == "presence" && m.Event == "leave" && m.Member != nil && m.Member.SID == sid
				}); err != nil {
					t.Errorf("%s never saw %s leave: %v", w.SID, sid, err)
					return
				}
				took := time.Since(killed)
				for {
					s := slowest.Load()
					if int64(took) <= s || slowest.CompareAndSwap(s, int64(took)) {
						break
					}
				}
			})
		}
	}
	wg.Wait()
	pwg.Wait()
	if t.Failed() {
		return
	}
	took := time.Duration(slowest.Load())
	t.Logf("A's members left for B's and C's clients %v after the kill (bound: TTL %v + interval %v = %v)", took, popts.TTL, popts.Interval, bound)
	if took > bound+presenceSlack {
		t.Fatalf("A's members left %v after the kill; bound %v (+%v slack)", took, bound, presenceSlack)
	}

	// A fence from a client that never moved; then everyone's record.
	ref := clients[len(clients)-1]
	p := ref.peers[0]
	p.Send(ctx, map[string]any{"t": "pub", "room": "k", "cid": "fence", "data": "fence"})
	from := 0
	f, err := p.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.CID == "fence" && m.T == "ok" })
	if err != nil {
		t.Fatal(err)
	}
	fence := clustertest.U64(f.Seq)
	var first []string
	for _, c := range clients {
		last := c.peers[len(c.peers)-1]
		from := 0
		if _, err := last.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.CID == "fence" }); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		bySeq := make([]string, fence+1)
		for _, p := range c.peers {
			for _, m := range p.Messages() {
				if m.Room != "k" || m.Seq == nil || (m.T != "ok" && m.T != "event") {
					continue
				}
				s := clustertest.U64(m.Seq)
				if s == 0 || s > fence {
					continue
				}
				if bySeq[s] != "" && bySeq[s] != m.CID {
					t.Fatalf("%s: seq %d is %s and %s", c.name, s, bySeq[s], m.CID)
				}
				bySeq[s] = m.CID
			}
		}
		for s := uint64(1); s <= fence; s++ {
			if bySeq[s] == "" {
				t.Fatalf("%s (%d connections): seq %d missing", c.name, len(c.peers), s)
			}
		}
		if first == nil {
			first = bySeq
		} else if !slices.Equal(first, bySeq) {
			t.Fatalf("%s disagrees on the order", c.name)
		}
	}
	seen := map[string]bool{}
	for _, cid := range first[1:] {
		if seen[cid] {
			t.Fatalf("%s is in the log twice", cid)
		}
		seen[cid] = true
	}
	for _, c := range clients {
		for k := 1; k <= perClient; k++ {
			if cid := fmt.Sprintf("%s-%d", c.name, k); !seen[cid] {
				t.Fatalf("%s is not in the log", cid)
			}
		}
	}
	moved := 0
	for _, c := range clients {
		moved += len(c.peers) - 1
	}
	if moved < 2 {
		t.Fatalf("%d reconnections; node A's two clients should have moved", moved)
	}
	t.Logf("%d messages in the log, every one once; %d clients moved nodes", fence, moved)

	// A newcomer on C is told exactly the live members: every client's
	// last session and itself, none of A's.
	probe, err := clustertest.ConnectPeer(ctx, nc.WSURL(), "probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if err := probe.Send(ctx, map[string]any{"t": "join", "room": "k", "cid": "probe", "since": fence}); err != nil {
		t.Fatal(err)
	}
	from = 0
	j, err := probe.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.CID == "probe" })
	if err != nil {
		t.Fatalf("probe's join: %v", err)
	}
	if j.T != "joined" {
		t.Fatalf("probe's join: %s", j.Raw)
	}
	want := []string{probe.SID}
	for _, c := range clients {
		want = append(want, c.peers[len(c.peers)-1].SID)
	}
	var got []string
	for _, m := range j.Members {
		got = append(got, m.SID)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("members %v, want %v (A's were %v)", got, want, dead)
	}
}

// maxSeq is the highest room seq p received.
func maxSeq(p *clustertest.Peer) uint64 {
	var s uint64
	for _, m := range p.Messages() {
		if m.Room == "k" && (m.T == "ok" || m.T == "event") {
			s = max(s, clustertest.U64(m.Seq))
		}
	}
	return s
}
