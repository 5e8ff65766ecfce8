package client

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// wsTransport dials the server's WebSocket endpoint ("<base>/ws").
type wsTransport struct {
	url    string
	header http.Header
	dialer websocket.Dialer
	opts   *Options
}

func newWS(base *url.URL, o *Options) *wsTransport {
	u := *base
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
	return &wsTransport{
		url:    u.String(),
		header: o.Header,
		opts:   o,
		dialer: websocket.Dialer{
			NetDialContext:   o.NetDialContext,
			TLSClientConfig:  o.TLSConfig,
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: o.WriteTimeout,
			ReadBufferSize:   16 << 10,
			WriteBufferSize:  16 << 10,
		},
	}
}

func (t *wsTransport) name() string { return TransportWS }

func (t *wsTransport) dial(ctx context.Context, hello []byte) (conn, []byte, error) {
	ws, resp, err := t.dialer.DialContext(ctx, t.url, t.header)
	if err != nil {
		if resp != nil {
			return nil, nil, &httpError{Status: resp.StatusCode, err: err}
		}
		return nil, nil, err
	}
	c := &wsConn{ws: ws, readTimeout: t.opts.ReadTimeout, writeTimeout: t.opts.WriteTimeout}
	ws.SetPingHandler(func(data string) error {
		// A server ping is a sign of life: extend the read deadline,
		// then answer as gorilla's default handler does.
		ws.SetReadDeadline(time.Now().Add(c.readTimeout))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.writeTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	// The handshake honours ctx: ending it unblocks the reads and writes
	// below.
	stop := context.AfterFunc(ctx, func() { ws.NetConn().SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.send(hello); err != nil {
		ws.Close()
		return nil, nil, ctxErr(ctx, err)
	}
	first, err := c.recv()
	if err != nil {
		ws.Close()
		return nil, nil, ctxErr(ctx, err)
	}
	if !stop() {
		ws.Close()
		return nil, nil, ctx.Err()
	}
	return c, first, nil
}

// ctxErr prefers ctx's error to err once ctx has ended.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// wsConn is one WebSocket connection. gorilla allows one concurrent reader
// and one concurrent writer, plus WriteControl and Close from anywhere:
// exactly the conn contract.
type wsConn struct {
	ws           *websocket.Conn
	readTimeout  time.Duration
	writeTimeout time.Duration
	once         sync.Once
}

func (c *wsConn) send(frame []byte) error {
	c.ws.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, frame)
}

func (c *wsConn) recv() ([]byte, error) {
	for {
		c.ws.SetReadDeadline(time.Now().Add(c.readTimeout))
		typ, frame, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return nil, &CloseError{Code: ce.Code, Text: ce.Text}
			}
			return nil, errors.Join(&CloseError{Code: websocket.CloseAbnormalClosure, Text: "connection lost"}, err)
		}
		if typ == websocket.TextMessage && len(bytes.TrimSpace(frame)) > 0 {
			return frame, nil
		}
	}
}

func (c *wsConn) close(graceful bool) {
	c.once.Do(func() {
		if graceful {
			c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"),
				time.Now().Add(c.writeTimeout))
		}
		c.ws.Close()
	})
}

// probe checks that a WebSocket handshake goes through (a proxy on the way
// may strip Upgrade), and closes the connection before any hello: the
// client's session is not touched.
func (t *wsTransport) probe(ctx context.Context) error {
	ws, resp, err := t.dialer.DialContext(ctx, t.url, t.header)
	if err != nil {
		if resp != nil {
			return &httpError{Status: resp.StatusCode, err: err}
		}
		return err
	}
	ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "probe"),
		time.Now().Add(t.opts.WriteTimeout))
	return ws.Close()
}
