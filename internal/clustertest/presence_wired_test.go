package clustertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/roomwire/roomwire/internal/clustertest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/room/roomtest"
)

// TestPresenceWired: members on two nodes see each other join and leave;
// when a node stops reaching Redis, its members leave for the others within
// TTL + interval.
func TestPresenceWired(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := clustertest.StartRedis(t, nil)
	popts := &redisbroker.PresenceOptions{TTL: 600 * time.Millisecond, Interval: 200 * time.Millisecond}
	var nodes []*clustertest.Node
	var brokers []*redisbroker.Broker
	for range 2 {
		b, err := redisbroker.New(&redisbroker.Options{Redis: srv.Options()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		p := redisbroker.NewPresence(b, popts)
		t.Cleanup(func() { p.Close() })
		brokers = append(brokers, b)
		hub := room.NewHub(&room.Options{Broker: b, Presence: p.ForHub()})
		nodes = append(nodes, clustertest.StartNodeHub(t, hub, clustertest.NodeConfig{}))
	}
	a := roomtest.Connect(ctx, t, nodes[0].Dialer(), "a", nil)
	a.Join(ctx, "p", nil)
	b := roomtest.Connect(ctx, t, nodes[1].Dialer(), "b", nil)
	j := b.Join(ctx, "p", nil)
	if len(j.Members) != 2 {
		t.Fatalf("b's join: %s", j.Raw)
	}
	from := 0
	a.WaitFor(ctx, &from, "b joins", func(m *roomtest.Msg) bool { return m.T == "presence" && m.Event == "join" && m.Member.SID == b.SID })
	b.Request(ctx, map[string]any{"t": "leave", "room": "p"})
	a.WaitFor(ctx, &from, "b leaves", func(m *roomtest.Msg) bool { return m.T == "presence" && m.Event == "leave" && m.Member.SID == b.SID })
	c := roomtest.Connect(ctx, t, nodes[1].Dialer(), "c", nil)
	c.Join(ctx, "p", nil)
	a.WaitFor(ctx, &from, "c joins", func(m *roomtest.Msg) bool { return m.T == "presence" && m.Event == "join" && m.Member.SID == c.SID })
	// Node 1 stops reaching Redis: c leaves for a within TTL + interval.
	crashed := time.Now()
	brokers[1].Close()
	a.WaitFor(ctx, &from, "c leaves", func(m *roomtest.Msg) bool { return m.T == "presence" && m.Event == "leave" && m.Member.SID == c.SID })
	took, bound := time.Since(crashed), popts.TTL+popts.Interval
	t.Logf("c left for a %v after its node lost Redis (bound: TTL + interval = %v)", took, bound)
	if took > bound+presenceSlack {
		t.Fatalf("c left %v after its node lost Redis; bound %v (+%v slack)", took, bound, presenceSlack)
	}
	// A newcomer on node 0 is told a and itself only.
	d := roomtest.Connect(ctx, t, nodes[0].Dialer(), "d", nil)
	if j := d.Join(ctx, "p", nil); len(j.Members) != 2 {
		t.Fatalf("d's join: %s", j.Raw)
	}
}

// presenceSlack is what a presence bound (TTL + interval) is allowed on top
// for delivery to the client on a loaded machine (-race).
const presenceSlack = 250 * time.Millisecond
