package clustertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/room/roomtest"
)

func TestMain(m *testing.M) {
	clustertest.RunChildIfAsked()
	goleak.VerifyTestMain(m)
}

// cluster starts one Redis and n nodes, each with its own Redis broker.
func cluster(t testing.TB, n int, cfg clustertest.NodeConfig) (*clustertest.Redis, []*clustertest.Node) {
	t.Helper()
	srv := clustertest.StartRedis(t, nil)
	var nodes []*clustertest.Node
	for range n {
		nodes = append(nodes, node(t, srv, cfg))
	}
	return srv, nodes
}

func node(t testing.TB, srv *clustertest.Redis, cfg clustertest.NodeConfig) *clustertest.Node {
	return presenceNode(t, srv, cfg, nil)
}

// presenceNode is node with cross-node presence (redisbroker.Presence with
// popts) when popts is not nil.
func presenceNode(t testing.TB, srv *clustertest.Redis, cfg clustertest.NodeConfig, popts *redisbroker.PresenceOptions) *clustertest.Node {
	b, err := redisbroker.New(&redisbroker.Options{Redis: srv.Options(), Log: room.LogLimits{MaxEntries: cfg.LogEntries}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() }) // runs after the node's own cleanup
	if popts != nil {
		p := redisbroker.NewPresence(b, popts)
		t.Cleanup(func() { p.Close() }) // after the node's, before the broker's
		cfg.Presence = p.ForHub()
	}
	if cfg.Rate == 0 {
		cfg.Rate, cfg.Burst = 1e6, 1e6
	}
	return clustertest.StartNode(t, b, cfg)
}

// TestOrderAcrossNodes: clients spread over three nodes publish 10,000
// durable messages into one room; every client sees every room seq exactly
// once, and all agree on which message has which seq.
func TestOrderAcrossNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	_, nodes := cluster(t, 3, clustertest.NodeConfig{})
	const total, perNode = 10_000, 2
	var clients []*roomtest.Client
	for i, n := range nodes {
		for k := range perNode {
			c := roomtest.Connect(ctx, t, n.Dialer(), fmt.Sprintf("n%d-%d", i, k), nil)
			c.Join(ctx, "order", nil)
			clients = append(clients, c)
		}
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		n := total / len(clients)
		if i == 0 {
			n += total % len(clients)
		}
		wg.Go(func() {
			from := 0
			for k := 1; k <= n; k++ {
				cid := c.NextCID()
				c.Send(ctx, map[string]any{"t": "pub", "room": "order", "cid": cid, "data": k})
				if k%64 == 0 { // keep the outbox bounded: wait for the ok now and then
					c.WaitFor(ctx, &from, "ok "+cid, func(m *roomtest.Msg) bool { return m.CID == cid && m.T != "event" })
				}
			}
		})
	}
	wg.Wait()
	var first []string
	for _, c := range clients {
		bySeq := make([]string, total+1)
		from := 0
		for got := 0; got < total; got++ {
			m := c.WaitFor(ctx, &from, fmt.Sprintf("durable message %d of %d", got+1, total), func(m *roomtest.Msg) bool {
				return m.Room == "order" && (m.T == "ok" || m.T == "event" || m.T == "error")
			})
			if m.T == "error" {
				t.Fatalf("%s", m.Raw)
			}
			s := clustertest.U64(m.Seq)
			if s < 1 || s > total || bySeq[s] != "" {
				t.Fatalf("seq %d out of range or duplicated (%s)", s, m.Raw)
			}
			bySeq[s] = m.CID
		}
		if first == nil {
			first = bySeq
		} else if !slices.Equal(first, bySeq) {
			t.Fatal("two clients disagree on the order")
		}
	}
	cids := map[string]bool{}
	for _, cid := range first[1:] {
		if cids[cid] {
			t.Fatalf("cid %s has two seqs", cid)
		}
		cids[cid] = true
	}
}

// TestConvergenceAcrossNodes: 20 clients over three nodes make 1000 patches
// concurrently, half of them a guarded read-modify-write of one counter
// (test then replace, against the client's own view: many are rejected),
// half adding keys of their own (always accepted). Every node ends with the
// same document; every accepted patch has its own version, versions 2..V
// with no gap; each client, applying the entries in seq order to its join
// snapshot, arrives at that document; the counter equals the number of
// accepted increments.
func TestConvergenceAcrossNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	_, nodes := cluster(t, 3, clustertest.NodeConfig{})
	const nClients, perClient = 20, 50
	setup := roomtest.Connect(ctx, t, nodes[0].Dialer(), "setup", nil)
	setup.Join(ctx, "doc", nil)
	if r := setup.Request(ctx, map[string]any{"t": "patch", "room": "doc", "base": 0, "ops": json.RawMessage(`[{"op":"add","path":"/n","value":0}]`)}); r.T != "ok" {
		t.Fatalf("setup: %s", r.Raw)
	}
	clients := make([]*replica, nClients)
	for i := range clients {
		c := roomtest.Connect(ctx, t, nodes[i%len(nodes)].Dialer(), fmt.Sprint("c", i), nil)
		clients[i] = newReplica(c, c.Join(ctx, "doc", nil))
	}
	var wg sync.WaitGroup
	for i, r := range clients {
		wg.Go(func() {
			from := 0
			for k := range perClient {
				cid := r.c.NextCID()
				var ops json.RawMessage
				if err := r.catchUp(); err != nil {
					t.Error(err)
					return
				}
				base := r.v
				if k%2 == 0 {
					var d struct{ N int }
					json.Unmarshal(r.doc, &d)
					ops = json.RawMessage(fmt.Sprintf(`[{"op":"test","path":"/n","value":%d},{"op":"replace","path":"/n","value":%d}]`, d.N, d.N+1))
					r.counter[cid] = true
				} else {
					ops = json.RawMessage(fmt.Sprintf(`[{"op":"add","path":"/c%d_%d","value":%d}]`, i, k, k))
				}
				r.sent(cid, ops)
				r.c.Send(ctx, map[string]any{"t": "patch", "room": "doc", "cid": cid, "base": base, "ops": ops})
				m := r.c.WaitFor(ctx, &from, "reply "+cid, func(m *roomtest.Msg) bool { return m.CID == cid && (m.T == "ok" || m.T == "error") })
				if m.T == "error" && m.Code != "conflict" && m.Code != "test_failed" {
					t.Errorf("%s: %s", cid, m.Raw)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// A fence: once every client (on every node) has seen it, every
	// node's replica has applied everything before it.
	fence := clustertest.U64(setup.Request(ctx, map[string]any{"t": "pub", "room": "doc", "data": "fence"}).Seq)
	for _, r := range clients {
		from := 0
		r.c.WaitFor(ctx, &from, "the fence", func(m *roomtest.Msg) bool { return m.T == "event" && clustertest.U64(m.Seq) == fence })
	}
	doc0, v0, seq0, ok := nodes[0].Hub.Snapshot("doc")
	if !ok || seq0 != fence {
		t.Fatalf("node 0: seq %d, fence %d", seq0, fence)
	}
	for i, n := range nodes[1:] {
		doc, v, seq, _ := n.Hub.Snapshot("doc")
		if string(doc) != string(doc0) || v != v0 || seq != seq0 {
			t.Fatalf("node %d: v%d seq%d %s; node 0: v%d seq%d %s", i+1, v, seq, doc, v0, seq0, doc0)
		}
	}
	versions := map[uint64]string{}
	increments := 0
	for _, r := range clients {
		if err := r.catchUp(); err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(r.doc, doc0) || r.v != v0 || r.seq != seq0 {
			t.Fatalf("client %s converged on v%d seq%d %s; nodes have v%d %s", r.c.SID, r.v, r.seq, r.doc, v0, doc0)
		}
		for cid, v := range r.okVersions {
			if other, dup := versions[v]; dup {
				t.Fatalf("version %d acknowledged to %s and %s", v, other, cid)
			}
			versions[v] = cid
			if r.counter[cid] {
				increments++
			}
		}
	}
	for v := uint64(2); v <= v0; v++ {
		if versions[v] == "" {
			t.Fatalf("version %d was acknowledged to nobody", v)
		}
	}
	var final struct{ N int }
	json.Unmarshal(doc0, &final)
	if final.N != increments {
		t.Fatalf("counter %d, %d increments accepted", final.N, increments)
	}
	t.Logf("%d patches accepted (v%d), %d of them counter increments", v0-1, v0, increments)
}

// replica is a test client's view of the room document, built only from
// server messages in order, as the protocol's client algorithm does.
type replica struct {
	c          *roomtest.Client
	mu         sync.Mutex
	ops        map[string]json.RawMessage // cid -> ops sent
	counter    map[string]bool            // cids of counter increments
	okVersions map[string]uint64
	doc        []byte
	v, seq     uint64
	next       int // inbox index not yet applied
}

func newReplica(c *roomtest.Client, joined *roomtest.Msg) *replica {
	return &replica{c: c, ops: map[string]json.RawMessage{}, counter: map[string]bool{}, okVersions: map[string]uint64{},
		doc: joined.Data, v: clustertest.U64(joined.V), seq: clustertest.U64(joined.Seq)}
}

func (r *replica) sent(cid string, ops json.RawMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops[cid] = ops
}

// catchUp applies the entries that arrived since the last call.
func (r *replica) catchUp() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs := r.c.Messages()
	for ; r.next < len(msgs); r.next++ {
		m := msgs[r.next]
		if m.Room != "doc" || m.Seq == nil || (m.T != "ok" && m.T != "patch" && m.T != "event") {
			continue
		}
		if m.T == "ok" && r.ops[m.CID] == nil {
			continue // the reply to a join
		}
		seq := clustertest.U64(m.Seq)
		if seq <= r.seq {
			continue
		}
		if seq != r.seq+1 {
			return fmt.Errorf("%s: seq %d after %d", r.c.SID, seq, r.seq)
		}
		r.seq = seq
		if m.T == "event" {
			continue
		}
		ops := m.Ops
		if m.T == "ok" {
			ops = r.ops[m.CID]
			r.okVersions[m.CID] = clustertest.U64(m.V)
		}
		doc, err := room.ApplyPatch(r.doc, ops, room.Limits{})
		if err != nil {
			return fmt.Errorf("%s: seq %d does not apply: %v", r.c.SID, seq, err)
		}
		if clustertest.U64(m.V) != r.v+1 {
			return fmt.Errorf("%s: version %d after %d", r.c.SID, clustertest.U64(m.V), r.v)
		}
		r.doc, r.v = doc, r.v+1
	}
	return nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}
