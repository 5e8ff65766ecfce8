package redisbroker_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/room/roomtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newBroker returns a broker on srv with its own key prefix, closed in
// t.Cleanup after everything registered later (nodes) has stopped.
func newBroker(t testing.TB, srv *clustertest.Redis, opts redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	opts.Redis = srv.Options()
	b, err := redisbroker.New(&opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("broker close: %v", err)
		}
	})
	return b
}

var prefixes atomic.Int64

func nextPrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// TestConformance runs the conformance suite with every node's hub over the
// Redis broker, one Redis for all scenarios (each with its own key prefix).
func TestConformance(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts redisbroker.Options
	}{
		{"shared-reader", redisbroker.Options{}},
		{"reader-per-room", redisbroker.Options{ReaderPerRoom: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			srv := clustertest.StartRedis(t, nil)
			roomtest.Run(t, func(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
				o := mode.opts
				o.Prefix = nextPrefix()
				o.Logger = testLogger(t)
				o.Log = room.LogLimits{MaxEntries: cfg.LogEntries}
				b := newBroker(t, srv, o)
				n := clustertest.StartNode(t, b, clustertest.NodeConfig{Config: cfg})
				return n.Dialer()
			})
		})
	}
}
