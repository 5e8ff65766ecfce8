package outbox

import (
	"testing"

	"github.com/roomwire/roomwire/room"
)

// BenchmarkDrain measures the writer's side of a session: 64 durable
// messages enqueued, pulled into one frame and acknowledged.
func BenchmarkDrain(b *testing.B) {
	hub := room.NewHub(nil)
	reg := NewRegistry(hub, nil)
	w, err := reg.Hello(&room.Envelope{Type: room.TypeHello}, "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	s := w.Session
	msg := &room.Message{Body: []byte(`{"t":"event","room":"bench","seq":1,"v":0,"from":"x","data":{"text":"hello"}}`), Durable: true}
	var (
		items []Item
		buf   []byte
		after uint64
	)
	b.ReportAllocs()
	for b.Loop() {
		for range 64 {
			s.Send(msg)
		}
		items = s.Pull(items[:0], after, 64<<10)
		buf = buf[:0]
		for _, it := range items {
			buf = it.AppendTo(buf)
			buf = append(buf, '\n')
			after = it.Seq
		}
		s.Ack(after)
	}
	b.ReportMetric(float64(b.N)*64/b.Elapsed().Seconds(), "msgs/s")
}
