package room

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// counter is a Session that counts and discards what it is sent.
type counter struct {
	id    string
	n     atomic.Int64
	bytes atomic.Int64
	done  chan struct{}
	once  sync.Once
}

func (s *counter) ID() string            { return s.id }
func (s *counter) Transport() string     { return "bench" }
func (s *counter) Done() <-chan struct{} { return s.done }
func (s *counter) Close(CloseReason)     { s.once.Do(func() { close(s.done) }) }
func (s *counter) Send(m *Message) error {
	s.n.Add(1)
	s.bytes.Add(int64(len(m.Body)))
	return nil
}

func benchRoom(b *testing.B, members int) (*Hub, []*counter) {
	h := NewHub(&Options{Rate: 1e9, Burst: 1e9})
	b.Cleanup(func() { h.Shutdown(context.Background()) })
	ss := make([]*counter, members)
	for i := range ss {
		ss[i] = &counter{id: fmt.Sprintf("s%d", i), done: make(chan struct{})}
		h.Connect(ss[i], json.RawMessage(`{"name":"bench"}`))
		h.Handle(context.Background(), ss[i], &Envelope{Type: TypeJoin, Room: "bench"})
	}
	return h, ss
}

// BenchmarkBroadcast1000 measures one durable event published to a room of
// 1000 members: ordering, log append, one encoding, 1000 enqueues.
func BenchmarkBroadcast1000(b *testing.B) {
	h, ss := benchRoom(b, 1000)
	e := &Envelope{Type: TypePub, Room: "bench", Data: json.RawMessage(`{"text":"hello, room","n":12345}`)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.Handle(ctx, ss[0], e)
	}
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkPatch measures a patch against a 100-member room: the acceptance
// rule, the apply, the append and the fan-out.
func BenchmarkPatch(b *testing.B) {
	h, ss := benchRoom(b, 100)
	ctx := context.Background()
	h.Handle(ctx, ss[0], &Envelope{Type: TypePatch, Room: "bench", Base: new(uint64), Ops: json.RawMessage(`[{"op":"add","path":"/n","value":0},{"op":"add","path":"/items","value":[1,2,3]}]`)})
	ops := json.RawMessage(`[{"op":"replace","path":"/n","value":7},{"op":"test","path":"/items/0","value":1}]`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		base := uint64(i + 1)
		h.Handle(ctx, ss[0], &Envelope{Type: TypePatch, Room: "bench", Base: &base, Ops: ops})
	}
}
