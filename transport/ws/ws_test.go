package ws_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
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

// Conn is a gorilla client connection as a roomtest.Conn.
type Conn struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	pending [][]byte
}

// Dial connects a gorilla client to url.
func Dial(ctx context.Context, url string) (*Conn, error) {
	c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	return &Conn{ws: c}, nil
}

func (c *Conn) Send(ctx context.Context, msg []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, msg)
}

func (c *Conn) Recv(ctx context.Context) ([]byte, error) {
	for len(c.pending) == 0 {
		_, frame, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &roomtest.CloseError{Code: ce.Code, Text: ce.Text}
		}
		if err != nil {
			return nil, err
		}
		for line := range strings.SplitSeq(string(frame), "\n") {
			c.pending = append(c.pending, []byte(line))
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	return m, nil
}

// Close cuts the TCP connection without a close frame.
func (c *Conn) Close() error { return c.ws.NetConn().Close() }

func factory(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
	srv, _, _ := server(t, cfg, nil)
	return func(ctx context.Context) (roomtest.Conn, error) {
		c, err := Dial(ctx, wsURL(srv))
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

func TestConformance(t *testing.T) { roomtest.Run(t, factory) }
