package boltstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/boltstore"
	"github.com/roomwire/roomwire/room/roomtest"
)

func TestMain(m *testing.M) {
	clustertest.RunChildIfAsked()
	goleak.VerifyTestMain(m)
}

// TestConformance runs the conformance suite over WebSocket with a
// MemoryBroker over a boltstore.
func TestConformance(t *testing.T) {
	roomtest.Run(t, func(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
		limits := room.LogLimits{MaxEntries: cfg.LogEntries}
		st, err := boltstore.Open(t.TempDir(), &boltstore.Options{Log: limits})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() }) // after the node's cleanup
		return clustertest.StartNode(t, room.NewMemoryBroker(st), clustertest.NodeConfig{Config: cfg}).Dialer()
	})
}

// TestKill9KeepsAcknowledgedPatches runs a server over a boltstore as a
// child process, sends it patches at about 1000 per second, kills it with
// SIGKILL once 500 have been acknowledged, restarts it on the same data
// directory, and checks that every acknowledged patch is in the document
// (and that the version counts exactly the patches in it).
func TestKill9KeepsAcknowledgedPatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := t.TempDir()
	child := clustertest.StartChildBolt(t, dir)
	p, err := clustertest.ConnectPeer(ctx, child.WSURL(), "writer", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	from := 0
	p.Send(ctx, map[string]any{"t": "join", "room": "crash", "cid": "j"})
	if _, err := p.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.T == "joined" }); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	sent := 0
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			err := p.Send(ctx, map[string]any{"t": "patch", "room": "crash", "cid": fmt.Sprint("p", i), "base": 0,
				"ops": json.RawMessage(fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, i, i))})
			if err != nil {
				return
			}
			sent = i + 1
		}
	})
	acked := map[int]bool{}
	killed := false
	start := time.Now()
	for {
		m, err := p.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.T == "ok" || m.T == "error" })
		if err != nil {
			if !killed {
				t.Fatalf("connection failed before the kill: %v", err)
			}
			break
		}
		if m.T == "error" {
			t.Fatalf("patch refused: %s", m.Raw)
		}
		i, _ := strconv.Atoi(strings.TrimPrefix(m.CID, "p"))
		acked[i] = true
		if len(acked) == 500 && !killed {
			t.Logf("500 acks after %v; kill -9", time.Since(start))
			child.Kill()
			killed = true
		}
	}
	close(stop)
	wg.Wait()

	child = clustertest.StartChildBolt(t, dir)
	q, err := clustertest.ConnectPeer(ctx, child.WSURL(), "reader", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	from = 0
	q.Send(ctx, map[string]any{"t": "join", "room": "crash", "cid": "j"})
	j, err := q.Wait(ctx, &from, func(m *roomtest.Msg) bool { return m.T == "joined" })
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]int
	if err := json.Unmarshal(j.Data, &doc); err != nil {
		t.Fatalf("document %s: %v", j.Data, err)
	}
	for i := range acked {
		if v, ok := doc[fmt.Sprint("k", i)]; !ok || v != i {
			t.Errorf("acknowledged patch %d is not in the document", i)
		}
	}
	if v := clustertest.U64(j.V); v != uint64(len(doc)) || clustertest.U64(j.Seq) != v {
		t.Errorf("version %d, seq %d, %d keys", v, clustertest.U64(j.Seq), len(doc))
	}
	t.Logf("%d patches sent, %d acknowledged, %d in the document after restart (version %d)", sent, len(acked), len(doc), clustertest.U64(j.V))
}
