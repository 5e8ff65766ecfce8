package clustertest

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/roomwire/roomwire/internal/wstest"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/route"
)

// Node is one server: a hub over a broker, every transport mounted at the
// root of an httptest server.
type Node struct {
	Hub       *room.Hub
	Transport *transport.Server
	HTTP      *httptest.Server
}

// NodeConfig is what a node is configured with besides its broker.
type NodeConfig struct {
	roomtest.Config
	// Rate and Burst are the hub's per-session limits (0: the defaults).
	Rate  rate.Limit
	Burst int
	// Presence is the hub's cross-node presence (nil: node-local).
	Presence room.Presence
	// Router routes HTTP sessions' requests between nodes (nil: every
	// session is local). See transport.Options.Router.
	Router route.Router
}

// StartNode starts a node over broker (nil: a MemoryBroker) and shuts it
// down in t.Cleanup: hub, transports, HTTP server, in that order. The
// broker is not closed: its owner closes it (register that cleanup before
// calling StartNode, so that it runs after).
func StartNode(t testing.TB, broker room.Broker, cfg NodeConfig) *Node {
	t.Helper()
	log := room.LogLimits{MaxEntries: cfg.LogEntries}
	opts := &room.Options{Broker: broker, Presence: cfg.Presence, Log: log}
	if cfg.Rate > 0 {
		opts.Rate = cfg.Rate
		opts.Burst = cfg.Burst
	}
	return StartNodeHub(t, room.NewHub(opts), cfg)
}

// StartNodeHub is StartNode with a hub of the caller's.
func StartNodeHub(t testing.TB, hub *room.Hub, cfg NodeConfig) *Node {
	t.Helper()
	tr := transport.New(hub, &transport.Options{ResumeWindow: cfg.ResumeWindow, MaxQueueBytes: cfg.MaxQueueBytes, Router: cfg.Router})
	srv := httptest.NewServer(tr)
	n := &Node{Hub: hub, Transport: tr, HTTP: srv}
	t.Cleanup(func() { n.Stop(t) })
	return n
}

// Stop shuts the node down (idempotent enough for Cleanup after an explicit
// Stop: a second hub Shutdown has nothing left to close).
func (n *Node) Stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Hub.Shutdown(ctx); err != nil {
		t.Errorf("hub shutdown: %v", err)
	}
	if err := n.Transport.Shutdown(ctx); err != nil {
		t.Errorf("transport shutdown: %v", err)
	}
	n.HTTP.Close()
}

// WSURL is the node's WebSocket endpoint.
func (n *Node) WSURL() string { return "ws" + strings.TrimPrefix(n.HTTP.URL, "http") + "/ws" }

// Dialer dials the node's WebSocket endpoint.
func (n *Node) Dialer() roomtest.Dialer { return wstest.Dialer(n.WSURL()) }
