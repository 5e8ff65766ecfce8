package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/longpoll"
)

// randomPatch returns a random patch over doc's "obj" (keys a-e) and "arr"
// (at most 8 elements), made against doc: add, replace, remove, and test
// operations that hold on doc but may fail by the time the server sees them.
func randomPatch(rng *rand.Rand, doc []byte) json.RawMessage {
	var d struct {
		Obj map[string]json.RawMessage `json:"obj"`
		Arr []json.RawMessage          `json:"arr"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		panic(fmt.Sprintf("local view is not JSON: %v: %s", err, doc))
	}
	k := string(rune('a' + rng.IntN(5)))
	cur, exists := d.Obj[k]
	n := len(d.Arr)
	val := func() string {
		switch rng.IntN(4) {
		case 0:
			return fmt.Sprintf(`"s%d"`, rng.IntN(100))
		case 1:
			return fmt.Sprintf(`{"n":%d}`, rng.IntN(100))
		default:
			return fmt.Sprint(rng.IntN(1000))
		}
	}
	op := func(o, path, v string) string {
		if v == "" {
			return fmt.Sprintf(`{"op":%q,"path":%q}`, o, path)
		}
		return fmt.Sprintf(`{"op":%q,"path":%q,"value":%s}`, o, path, v)
	}
	var ops []string
	switch rng.IntN(9) {
	case 0:
		ops = []string{op("add", "/obj/"+k, val())}
	case 1:
		if exists {
			ops = []string{op("replace", "/obj/"+k, val())}
		} else {
			ops = []string{op("add", "/obj/"+k, val())}
		}
	case 2:
		if exists {
			ops = []string{op("remove", "/obj/"+k, "")}
		} else {
			ops = []string{op("add", "/obj/"+k, val())}
		}
	case 3:
		if n < 8 {
			ops = []string{op("add", fmt.Sprintf("/arr/%d", rng.IntN(n+1)), val())}
		} else {
			ops = []string{op("remove", "/arr/0", "")}
		}
	case 4:
		if n > 0 {
			ops = []string{op("remove", fmt.Sprintf("/arr/%d", rng.IntN(n)), "")}
		} else {
			ops = []string{op("add", "/arr/-", val())}
		}
	case 5:
		if n > 0 {
			ops = []string{op("replace", fmt.Sprintf("/arr/%d", rng.IntN(n)), val())}
		} else {
			ops = []string{op("add", "/arr/-", val())}
		}
	case 6: // compare-and-set: fails if anyone changed the key meanwhile
		if exists {
			ops = []string{op("test", "/obj/"+k, string(cur)), op("replace", "/obj/"+k, val())}
		} else {
			ops = []string{op("add", "/obj/"+k, val())}
		}
	case 7:
		if n > 0 {
			i := rng.IntN(n)
			ops = []string{op("test", fmt.Sprintf("/arr/%d", i), string(d.Arr[i])), op("remove", fmt.Sprintf("/arr/%d", i), "")}
		} else {
			ops = []string{op("add", "/arr/0", val())}
		}
	case 8:
		ops = []string{op("add", "/obj/"+k, val())}
		if n < 8 {
			ops = append(ops, op("add", "/arr/-", val()))
		}
	}
	return json.RawMessage("[" + joinOps(ops) + "]")
}

func joinOps(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

// TestConvergence: 20 clients send 1000 random patches in total,
// concurrently and against stale bases. Once every patch has its verdict
// and every client has applied the room's last seq, each client's
// confirmed document — built only from what the server sent it — equals the
// server's byte for byte, and so does its local view.
func TestConvergence(t *testing.T) {
	convergence(t, nil)
}

// TestConvergenceAllTransports is TestConvergence with the clients spread
// over WebSocket, SSE+POST and long-polling.
func TestConvergenceAllTransports(t *testing.T) {
	counts := map[string]int{}
	convergence(t, func(i int) []string {
		tr := allTransports[i%len(allTransports)]
		counts[tr]++
		return []string{tr}
	})
	t.Logf("clients per transport: %v", counts)
}

// convergence runs the convergence test; transports, if set, names the
// transports of client i.
func convergence(t *testing.T, transports func(i int) []string) {
	ctx := deadline(t, 90*time.Second)
	srv := newServer(t, nil, &transport.Options{LongPoll: longpoll.Options{Hold: 5 * time.Second}})
	const nClients, total, name = 20, 1000, "conv"
	rooms := make([]*client.Room, nClients)
	clients := make([]*client.Client, nClients)
	evs := make([]*events, nClients)
	b := newBell()
	for i := range nClients {
		o := &client.Options{User: []byte(fmt.Sprintf(`{"n":%d}`, i)), Logger: debugLogger(fmt.Sprint(i))}
		if transports != nil {
			o.Transports = transports(i)
		}
		c := dial(ctx, t, srv.http.URL, o)
		if transports != nil && c.Stats().Transport != o.Transports[0] {
			t.Fatalf("client %d connected over %s, want %s", i, c.Stats().Transport, o.Transports[0])
		}
		clients[i] = c
		rooms[i] = join(ctx, t, c, name)
		evs[i] = collectRing(rooms[i], b)
	}
	if err := rooms[0].Patch(json.RawMessage(`[{"op":"add","path":"/obj","value":{}},{"op":"add","path":"/arr","value":[]}]`)); err != nil {
		t.Fatal(err)
	}
	for _, r := range rooms {
		if err := r.WaitSeq(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	var retried sync.Map
	for i, r := range rooms {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 0x5eed))
			for sent := 0; sent < total/nClients; {
				doc, _ := r.Doc()
				err := r.Patch(randomPatch(rng, doc))
				switch {
				case err == nil:
					sent++
				case errors.Is(err, room.ErrBadPatch), errors.Is(err, room.ErrTestFailed):
					// The local view moved between Doc and Patch.
					n, _ := retried.LoadOrStore(i, new(int))
					*n.(*int)++
					continue
				default:
					t.Errorf("client %d: patch: %v", i, err)
					return
				}
				if rng.IntN(3) == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	wg.Wait()
	sentIn := time.Since(start)
	for i, r := range rooms {
		if err := r.Settle(ctx); err != nil {
			t.Fatalf("client %d: settle: %v", i, err)
		}
	}
	settledIn := time.Since(start)
	doc, version, seq, ok := srv.hub.Snapshot(name)
	if !ok {
		t.Fatal("room gone from the hub")
	}
	for i, r := range rooms {
		if err := r.WaitSeq(ctx, seq); err != nil {
			t.Fatalf("client %d: wait for seq %d: %v", i, seq, err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("sent in %v, settled in %v, every client at the last seq in %v", sentIn.Round(time.Millisecond), settledIn.Round(time.Millisecond), elapsed.Round(time.Millisecond))
	for i, r := range rooms {
		conf, v, s := r.Confirmed()
		if !bytes.Equal(conf, doc) || v != version || s != seq {
			t.Errorf("client %d: confirmed document v%d seq %d\n%s\nserver v%d seq %d\n%s", i, v, s, conf, version, seq, doc)
		}
		local, _ := r.Doc()
		if !bytes.Equal(local, doc) || r.Pending() != 0 {
			t.Errorf("client %d: local view (%d pending)\n%s\nserver\n%s", i, r.Pending(), local, doc)
		}
	}
	accepted := int(version) - 1 // the seed patch is version 1
	rejected := total - accepted
	// Every rejection is reported to its sender, and every other
	// member's accepted patch arrives as an event, in seq order. The pumps
	// may still be handing the last events over: wait for the totals.
	reported := func() (rej, patches int) {
		for _, e := range evs {
			all := e.snapshot()
			rej += count(all, client.EventRejected)
			patches += count(all, client.EventPatch)
		}
		return
	}
	// Each accepted patch reaches the 19 members that did not send it
	// (the seed reached 19 too).
	wantPatches := (accepted + 1) * (nClients - 1)
	for {
		ring := b.wait()
		rej, patches := reported()
		if rej == rejected && patches == wantPatches {
			break
		}
		select {
		case <-ring:
		case <-ctx.Done():
			t.Fatalf("events reported: %d rejections (want %d), %d patches (want %d)", rej, rejected, patches, wantPatches)
		}
	}
	byCode := map[string]int{}
	for i, e := range evs {
		last := uint64(0)
		for _, ev := range e.snapshot() {
			switch ev.Kind {
			case client.EventRejected:
				var se *client.ServerError
				if !errors.As(ev.Err, &se) {
					t.Errorf("client %d: rejection without a server error: %v", i, ev.Err)
					continue
				}
				byCode[se.Code]++
				if se.Code == room.CodeInternal {
					t.Logf("client %d: internal error: %v", i, se)
				}
			case client.EventPatch:
				if ev.Seq <= last {
					t.Errorf("client %d: patch event seq %d after %d", i, ev.Seq, last)
				}
				last = ev.Seq
			}
		}
	}
	retries := 0
	for _, c := range clients {
		retries += c.Stats().Retries
	}
	t.Logf("%d clients, %d patches in %v: %d accepted, %d rejected %v; %d transient refusals retried; final version %d, seq %d, %d bytes",
		nClients, total, elapsed.Round(time.Millisecond), accepted, rejected, byCode, retries, version, seq, len(doc))
	if accepted == 0 || rejected == 0 {
		t.Errorf("want both accepted and rejected patches, got %d and %d", accepted, rejected)
	}
}
