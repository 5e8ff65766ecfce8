package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/redisbroker"
)

// BenchmarkReaders compares the two reader layouts: one shared XREAD over
// every subscribed room's stream, and a reader (goroutine and connection)
// per room. One broker appends events, spread over the rooms by 16
// goroutines; another broker, subscribed to every room, receives them. It
// reports delivered entries per second and the append-to-delivery latency.
//
//	go test -run '^$' -bench Readers -benchtime 20000x ./room/redisbroker
func BenchmarkReaders(b *testing.B) {
	srv := clustertest.StartRedis(b, nil)
	for _, mode := range []struct {
		name string
		opts redisbroker.Options
	}{
		{"shared", redisbroker.Options{}},
		{"shared4", redisbroker.Options{Readers: 4}},
		{"per-room", redisbroker.Options{ReaderPerRoom: true}},
	} {
		for _, rooms := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/rooms=%d", mode.name, rooms), func(b *testing.B) {
				prefix := nextPrefix()
				pub := newBroker(b, srv, redisbroker.Options{Prefix: prefix})
				o := mode.opts
				o.Prefix = prefix
				sub := newBroker(b, srv, o)
				benchDelivery(b, pub, sub, rooms)
			})
		}
	}
}

func benchDelivery(b *testing.B, pub, sub *redisbroker.Broker, rooms int) {
	ctx := context.Background()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		got       atomic.Int64
		done      = make(chan struct{})
	)
	n := int64(b.N)
	fn := func(e *room.Entry) {
		ns, _ := strconv.ParseInt(string(e.Data), 10, 64)
		d := time.Duration(time.Now().UnixNano() - ns)
		mu.Lock()
		latencies = append(latencies, d)
		mu.Unlock()
		if got.Add(1) == n {
			close(done)
		}
	}
	for r := range rooms {
		_, cancel, err := sub.Subscribe(ctx, fmt.Sprint("room", r), fn)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cancel)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				e := &room.Entry{Kind: room.KindEvent, From: "bench", Data: json.RawMessage(strconv.FormatInt(time.Now().UnixNano(), 10))}
				if err := pub.Append(ctx, fmt.Sprint("room", int(i)%rooms), e, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d delivered", got.Load(), n)
	}
	b.StopTimer()
	report(b, latencies)
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
}

func report(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	if len(ds) == 0 {
		return
	}
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}
