// Package wstest is the tests' WebSocket client at the level of protocol
// messages: a gorilla connection as a roomtest.Conn. Send may be called
// concurrently with Recv; Recv must not be called concurrently.
package wstest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/room/roomtest"
)

// Conn is a WebSocket client connection as a roomtest.Conn: one protocol
// message per Send, server frames split into messages by Recv.
type Conn struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	pending [][]byte
}

// Dial opens a WebSocket connection to url (ws://host/prefix/ws).
func Dial(ctx context.Context, url string) (*Conn, error) {
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, err
	}
	return &Conn{ws: c}, nil
}

// Dialer returns a roomtest.Dialer for url.
func Dialer(url string) roomtest.Dialer {
	return func(ctx context.Context) (roomtest.Conn, error) {
		c, err := Dial(ctx, url)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Send implements roomtest.Conn.
func (c *Conn) Send(_ context.Context, msg []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, msg)
}

// Recv implements roomtest.Conn. It must not be called concurrently.
func (c *Conn) Recv(context.Context) ([]byte, error) {
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

// Close cuts the connection without a close frame.
func (c *Conn) Close() error { return c.ws.NetConn().Close() }
