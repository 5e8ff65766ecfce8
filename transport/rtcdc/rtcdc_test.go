package rtcdc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/signaling"
	"github.com/roomwire/roomwire/transport/outbox"
	"github.com/roomwire/roomwire/transport/rtcdc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loopbackAPI is a client-side pion API that gathers and accepts loopback
// candidates only: no test packet leaves 127.0.0.1.
func loopbackAPI(t testing.TB) *webrtc.API {
	api, err := signaling.NewAPI(&signaling.APIOptions{
		IncludeLoopback: true,
		AllowLocalIP:    signaling.LoopbackOnly,
		AllowRemoteIP:   signaling.LoopbackOnly,
	})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// server starts a hub and a DataChannel handler on loopback behind
// httptest; the negotiation endpoints are at srv.URL+"/rtc".
func server(t testing.TB, cfg roomtest.Config, hubOpts *room.Options, opts *rtcdc.Options) (*httptest.Server, *room.Hub, *rtcdc.Handler) {
	var ho room.Options
	if hubOpts != nil {
		ho = *hubOpts
	}
	ho.Log = room.LogLimits{MaxEntries: cfg.LogEntries}
	hub := room.NewHub(&ho)
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: cfg.ResumeWindow, MaxQueueBytes: cfg.MaxQueueBytes})
	var o rtcdc.Options
	if opts != nil {
		o = *opts
	}
	o.UDPAddr = "127.0.0.1:0"
	if o.AllowRemoteIP == nil {
		o.AllowRemoteIP = signaling.LoopbackOnly
	}
	h, err := rtcdc.NewHandler(reg, &o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), roomtest.Timeout)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("rtcdc shutdown: %v", err)
		}
		srv.Close()
	})
	return srv, hub, h
}

// Conn is an rtcdc client connection as a roomtest.Conn: it splits the
// server's batches into messages and turns a close message into a
// *roomtest.CloseError.
type Conn struct {
	c       *rtcdc.Conn
	mu      sync.Mutex
	pending [][]byte
}

func dial(ctx context.Context, t testing.TB, api *webrtc.API, url string) (*Conn, error) {
	c, err := rtcdc.Dial(ctx, url+"/rtc", &rtcdc.DialOptions{API: api})
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

func (c *Conn) Send(ctx context.Context, msg []byte) error { return c.c.Send(ctx, msg) }

func (c *Conn) Recv(ctx context.Context) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) == 0 {
		frame, err := c.c.Recv(ctx)
		if err != nil {
			return nil, err
		}
		for line := range bytes.SplitSeq(frame, []byte{'\n'}) {
			c.pending = append(c.pending, line)
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	var cl struct {
		T      string `json:"t"`
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if bytes.HasPrefix(m, []byte(`{"t":"close"`)) && json.Unmarshal(m, &cl) == nil {
		return nil, &roomtest.CloseError{Code: cl.Code, Text: cl.Reason}
	}
	return m, nil
}

func (c *Conn) Close() error { return c.c.Close() }

func factory(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
	srv, _, _ := server(t, cfg, nil, nil)
	api := loopbackAPI(t)
	return func(ctx context.Context) (roomtest.Conn, error) {
		c, err := dial(ctx, t, api, srv.URL)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		return c, nil
	}
}

func TestConformance(t *testing.T) { roomtest.Run(t, factory) }
