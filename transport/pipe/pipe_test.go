package pipe_test

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/roomtest"
	"github.com/roomwire/roomwire/transport/outbox"
	"github.com/roomwire/roomwire/transport/pipe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// factory serves the conformance suite over in-process pipes.
func factory(t *testing.T, cfg roomtest.Config) roomtest.Dialer {
	hub := room.NewHub(&room.Options{Log: room.LogLimits{MaxEntries: cfg.LogEntries}})
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: cfg.ResumeWindow, MaxQueueBytes: cfg.MaxQueueBytes})
	t.Cleanup(func() {
		if err := hub.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return func(ctx context.Context) (roomtest.Conn, error) {
		return &conn{reg: reg}, nil
	}
}

// conn adapts pipe.Conn to roomtest.Conn: the first Send is the hello.
type conn struct {
	reg     *outbox.Registry
	c       *pipe.Conn
	welcome []byte
}

func (c *conn) Send(ctx context.Context, msg []byte) error {
	if c.c == nil {
		pc, w, err := pipe.Dial(c.reg, msg, nil)
		if err != nil {
			return err
		}
		c.c, c.welcome = pc, w
		return nil
	}
	return c.c.Send(ctx, msg)
}

func (c *conn) Recv(ctx context.Context) ([]byte, error) {
	if w := c.welcome; w != nil {
		c.welcome = nil
		return w, nil
	}
	if c.c == nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	m, err := c.c.Recv(ctx)
	var r room.CloseReason
	if errors.As(err, &r) {
		return nil, &roomtest.CloseError{Code: r.Code, Text: r.Text}
	}
	return m, err
}

func (c *conn) Close() error {
	if c.c != nil {
		return c.c.Close()
	}
	return nil
}

func TestConformance(t *testing.T) { roomtest.Run(t, factory) }
