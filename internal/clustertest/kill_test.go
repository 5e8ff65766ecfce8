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
	"github.com/roomwire/roomwire/room/roomtest"
)

// TestNodeKill9: three nodes share one Redis; node A is a child process.
// Clients on every node publish into one room; once 400 messages are
// acknowledged, A is killed with SIGKILL. A's clients reconnect to node B
// (a new session: sessions live on one node, so resume cannot cross
// nodes), rejoin with since = the last room seq they saw, and resend what
// was not acknowledged with the same cid. In the end every client has seen
// every room seq exactly once, all agree on the order, and every message
// is in the log exactly once.
func TestNodeKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, nil)
	child := clustertest.StartChildRedis(t, srv.Addr(), "rw")
	nb := node(t, srv, clustertest.NodeConfig{})
	nc := node(t, srv, clustertest.NodeConfig{})

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
	child.Kill()
	wg.Wait()
	if t.Failed() {
		return
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
