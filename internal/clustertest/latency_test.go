package clustertest_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room/roomtest"
)

// BenchmarkDeliveryLatency measures how long a published event takes from
// the sender's WebSocket write to another client's read, one message at a
// time (no load): both clients on one node with the in-memory broker; both
// on one node with the Redis broker; and sender and receiver on two nodes
// sharing Redis.
//
//	go test -run '^$' -bench DeliveryLatency -benchtime 2000x ./internal/clustertest
func BenchmarkDeliveryLatency(b *testing.B) {
	for _, tc := range []string{"memory", "redis-same-node", "redis-cross-node"} {
		b.Run(tc, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var sendNode, recvNode *clustertest.Node
			switch tc {
			case "memory":
				sendNode = clustertest.StartNode(b, nil, clustertest.NodeConfig{Rate: 1e6, Burst: 1e6})
				recvNode = sendNode
			default:
				srv := clustertest.StartRedis(b, nil)
				sendNode = node(b, srv, clustertest.NodeConfig{})
				recvNode = sendNode
				if tc == "redis-cross-node" {
					recvNode = node(b, srv, clustertest.NodeConfig{})
				}
			}
			s := roomtest.Connect(ctx, b, sendNode.Dialer(), "sender", nil)
			r := roomtest.Connect(ctx, b, recvNode.Dialer(), "receiver", nil)
			s.Join(ctx, "lat", nil)
			r.Join(ctx, "lat", nil)
			lat := make([]time.Duration, 0, b.N)
			from := 0
			b.ResetTimer()
			for i := range b.N {
				want := strconv.Itoa(i)
				t0 := time.Now()
				s.Send(ctx, map[string]any{"t": "pub", "room": "lat", "data": i})
				r.WaitFor(ctx, &from, "event", func(m *roomtest.Msg) bool { return m.T == "event" && string(m.Data) == want })
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}
