// Package pipe is an in-process transport: a Conn talks to a hub's sessions
// with no network in between. Tests use it to run the conformance suite
// without sockets, and Go programs can use it for in-process clients (bots,
// workers) that join rooms like any other client.
//
// A Conn's methods are safe for concurrent use; Recv returns messages in
// session order.
package pipe

import (
	"context"
	"sync"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/internal/conns"
	"github.com/roomwire/roomwire/transport/outbox"
)

// Conn is one in-process connection of a session.
type Conn struct {
	reg  *outbox.Registry
	sess *outbox.Session
	gen  uint64

	recvMu  sync.Mutex // one Recv at a time
	after   uint64     // last sseq handed out
	items   []outbox.Item
	pending [][]byte

	quit *conns.Quit
}

// Dial opens a connection whose first message is hello (a hello envelope,
// possibly with resume) and returns it with the welcome message.
func Dial(reg *outbox.Registry, hello []byte, user []byte) (*Conn, []byte, error) {
	env, err := room.ParseEnvelope(hello)
	if err != nil {
		return nil, nil, err
	}
	c := &Conn{reg: reg, quit: conns.NewQuit()}
	w, err := reg.HelloAttach(env, "pipe", user, c.quit.End)
	if err != nil {
		return nil, nil, err
	}
	c.sess, c.gen, c.after = w.Session, w.Gen, w.Ack
	return c, w.Body, nil
}

// Send delivers one client message (or several separated by '\n').
func (c *Conn) Send(ctx context.Context, raw []byte) error {
	select {
	case <-c.quit.Ended():
		return c.quit.Reason()
	default:
	}
	c.sess.Receive(ctx, raw)
	return nil
}

// Recv returns the next server message. After the session closes the
// connection, Recv returns the messages already pulled and then the
// room.CloseReason.
func (c *Conn) Recv(ctx context.Context) ([]byte, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	// Pull before waiting: the wake signal is shared with the connection
	// this one replaced, which may have taken it.
	for {
		c.items = c.sess.Pull(c.items[:0], c.after, 64<<10)
		for _, it := range c.items {
			c.pending = append(c.pending, it.AppendTo(nil))
			if it.Seq > 0 {
				c.after = it.Seq
			}
		}
		if len(c.pending) > 0 {
			break
		}
		select {
		case <-c.quit.Ended():
			return nil, c.quit.Reason()
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.sess.Wake():
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	return m, nil
}

// Close cuts the connection without a goodbye, as a dropped network would:
// the session waits out its resume window.
func (c *Conn) Close() error {
	c.quit.End(room.CloseReason{Code: 1006, Text: "closed by client"})
	c.sess.Detach(c.gen)
	return nil
}
