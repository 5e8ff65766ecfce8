package ws_test

import (
	"context"
	"github.com/roomwire/roomwire/internal/wstest"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport/outbox"
	"github.com/roomwire/roomwire/transport/ws"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server starts a hub and a WebSocket handler behind httptest.
func server(t *testing.T, cfg roomtest.Config, opts *ws.Options) (*httptest.Server, *room.Hub, *ws.Handler) {
	hub := room.NewHub(&room.Options{Log: room.LogLimits{MaxEntries: cfg.LogEntries}})
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: cfg.ResumeWindow, MaxQueueBytes: cfg.MaxQueueBytes})
	h := ws.NewHandler(reg, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), roomtest.Timeout)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("ws shutdown: %v", err)
		}
		srv.Close()
	})
	return srv, hub, h
}

func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

func factory(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
	srv, _, _ := server(t, cfg, nil)
	return func(ctx context.Context) (roomtest.Conn, error) {
		return wstest.Dial(ctx, wsURL(srv))
	}
}

func TestConformance(t *testing.T) { roomtest.Run(t, factory) }
