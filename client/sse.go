package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomwire/roomwire/room"
)

// sseTransport carries the session over Server-Sent Events (server to
// client, "<base>/sse/events") and POST (client to server, "<base>/sse/send"),
// as docs/protocol-http.md specifies:
//
//   - A new session, or one whose credentials the server no longer
//     honours, starts with POST sse/hello; the welcome carries the ticket
//     for the first stream.
//   - A live session reconnects without a hello: POST sse/ticket with
//     {"ack":N} (N = the last session seq applied) and a GET with the
//     ticket and Last-Event-ID: N. A 401 or 410 answer sends the client
//     back to hello.
//   - Before the stream is trusted, a ping is posted and its pong must come
//     back on the stream within Options.ProbeTimeout; otherwise a proxy is
//     buffering the stream and the dial fails, so that the client moves on
//     to long-polling.
type sseTransport struct {
	hc   *httpClient
	opts *Options
}

func newSSE(hc *httpClient, o *Options) *sseTransport { return &sseTransport{hc: hc, opts: o} }

func (t *sseTransport) name() string { return TransportSSE }

// probePing is the ping of the buffering check; its pong carries the data.
const (
	probePing = `{"t":"ping","data":"roomwire-probe"}`
	probeData = `"roomwire-probe"`
)

// errBuffered: the stream did not deliver the probe's pong in time.
var errBuffered = errors.New("client: the SSE stream is buffered on the way (no event within the probe timeout); moving on")

func (t *sseTransport) dial(ctx context.Context, hello []byte) (conn, []byte, error) {
	var h room.Envelope
	if err := json.Unmarshal(hello, &h); err != nil {
		return nil, nil, err
	}
	var (
		w        *welcome
		head     []byte
		ticket   string
		lastID   uint64
		viaHello bool
	)
	if r := h.Resume; r != nil {
		// A live session: a ticket is enough.
		var err error
		ticket, err = t.ticket(ctx, &creds{r.SID, r.Token}, r.Ack)
		switch {
		case err == nil:
			w = &welcome{Type: room.TypeWelcome, SID: r.SID, Token: r.Token, Resumed: true}
			head, _ = json.Marshal(w)
			lastID = r.Ack
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case !answered(err):
			return nil, nil, err // the server is not reachable this way
		}
		// Otherwise the session has ended (410), is unknown (401), or
		// the answer was unexpected: hello sorts it out.
	}
	if w == nil {
		var err error
		if w, head, err = t.hc.hello(ctx, "sse/hello", hello); err != nil {
			return nil, nil, err
		}
		if w.Ticket == "" {
			return nil, nil, fmt.Errorf("client: sse/hello: welcome without a ticket")
		}
		ticket, viaHello = w.Ticket, true
	}
	c := &sseConn{connState: newConnState(), t: t, cr: creds{w.SID, w.Token}}
	events, err := c.open(ctx, ticket, lastID)
	if err != nil {
		c.close(false)
		if viaHello || errors.Is(err, errBuffered) {
			err = &sessionError{w: *w, err: err}
		}
		return nil, nil, err
	}
	first := make([]byte, 0, len(head)+1+len(events))
	first = append(first, head...)
	if len(events) > 0 {
		first = append(append(first, '\n'), events...)
	}
	return c, first, nil
}

// answered reports whether err is the server's answer to a request about a
// session, rather than a failure to reach it.
func answered(err error) bool {
	var ce *CloseError
	var se *statusError
	return errors.Is(err, errSessionUnknown) || errors.As(err, &ce) || errors.As(err, &se)
}

// ticket asks for a stream ticket for a live session, acknowledging ack.
func (t *sseTransport) ticket(ctx context.Context, cr *creds, ack uint64) (string, error) {
	status, body, err := t.hc.post(ctx, "sse/ticket", fmt.Appendf(nil, `{"ack":%d}`, ack), cr, true)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", sessionStatus("sse/ticket", status, body)
	}
	var tk struct {
		Ticket string `json:"ticket"`
	}
	if err := json.Unmarshal(body, &tk); err != nil || tk.Ticket == "" {
		return "", fmt.Errorf("client: sse/ticket: unexpected answer %.200q", body)
	}
	return tk.Ticket, nil
}

// probe opens a throwaway session, checks that its stream is not
// buffered, and ends it.
func (t *sseTransport) probe(ctx context.Context) error {
	cn, _, err := t.dial(ctx, []byte(`{"t":"hello"}`))
	var se *sessionError
	switch {
	case err == nil:
		c := cn.(*sseConn)
		c.close(false)
		return t.hc.end(ctx, "sse/close", &c.cr)
	case errors.As(err, &se):
		t.hc.end(ctx, "sse/close", &creds{se.w.SID, se.w.Token})
	}
	return err
}

// end ends a session at once (POST close).
func (h *httpClient) end(ctx context.Context, endpoint string, cr *creds) error {
	status, body, err := h.post(ctx, endpoint, nil, cr, true)
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return sessionStatus(endpoint, status, body)
	}
	return nil
}

// sseConn is one event stream and the POSTs that go with it.
type sseConn struct {
	connState
	t  *sseTransport
	cr creds

	// Owned by the reader (dial, then recv).
	body    io.ReadCloser
	br      *bufio.Reader
	idle    *time.Timer
	closing error // a close message that followed the last frame

	once sync.Once
}

func (c *sseConn) lazyAcks() {}

// open sends the probe ping, opens the stream with ticket and reads it up
// to the probe's pong; it returns the messages that came before the pong
// (a resumed session's backlog), separated by '\n'.
func (c *sseConn) open(ctx context.Context, ticket string, lastID uint64) ([]byte, error) {
	// ctx bounds the dial; the stream lives on in c.ctx.
	stop := context.AfterFunc(ctx, c.cancel)
	defer stop()
	if err := c.send([]byte(probePing)); err != nil {
		return nil, ctxErr(ctx, err)
	}
	var late atomic.Bool
	probe := time.AfterFunc(c.t.opts.ProbeTimeout, func() {
		late.Store(true)
		c.cancel()
	})
	defer probe.Stop()
	fail := func(err error) ([]byte, error) {
		if late.Load() {
			return nil, errBuffered
		}
		return nil, ctxErr(ctx, err)
	}

	req, err := c.t.hc.request(c.ctx, http.MethodGet, "sse/events?ticket="+url.QueryEscape(ticket), nil, nil, false)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastID, 10))
	}
	resp, err := c.t.hc.hc.Do(req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil, fmt.Errorf("client: sse/events: Content-Type %q", resp.Header.Get("Content-Type"))
		}
		return nil, sessionStatus("sse/events", resp.StatusCode, b)
	}
	c.body = resp.Body
	readTimeout := c.t.opts.ReadTimeout
	c.idle = time.AfterFunc(readTimeout, func() {
		c.fail(&CloseError{Code: 1006, Text: fmt.Sprintf("nothing received for %v", readTimeout)})
	})
	c.br = bufio.NewReaderSize(&idleReader{r: resp.Body, t: c.idle, d: readTimeout}, 32<<10)

	var frame []byte
	for {
		data, err := c.next()
		if err != nil {
			return fail(err)
		}
		if m, err := parseMsg(data); err == nil {
			if m.T == room.TypeClose {
				return nil, m.closeError()
			}
			if m.T == room.TypePong && bytes.Equal(bytes.TrimSpace(m.Data), []byte(probeData)) {
				break
			}
		}
		if len(frame) > 0 {
			frame = append(frame, '\n')
		}
		frame = append(frame, data...)
	}
	if !probe.Stop() {
		return nil, errBuffered // the pong came, but only just too late
	}
	if !stop() {
		return nil, ctx.Err()
	}
	return frame, nil
}

// idleReader restarts its timer whenever bytes arrive: the stream is dead
// when nothing at all (not even a keepalive comment) comes for d.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.t.Reset(ir.d)
	}
	return n, err
}

// next returns the data of the next event, skipping comments (padding,
// keepalives). The server puts every message on one data line; should
// there be several, they are joined with a space, which in JSON is the
// same as the newline between them.
func (c *sseConn) next() ([]byte, error) {
	var data []byte
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if data != nil {
				return data, nil
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		if string(field) != "data" {
			continue // a comment, "id" (the sseq is in the message), "event", "retry"
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		if data != nil {
			data = append(data, ' ')
		}
		data = append(data, value...)
		if data == nil {
			data = []byte{}
		}
	}
}

// readLine reads one line, however long.
func (c *sseConn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		buf := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = c.br.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	return line, err
}

// eventWaiting reports whether a whole event is already buffered, so that
// recv can add it to the frame without blocking.
func (c *sseConn) eventWaiting() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	if !bytes.HasPrefix(b, []byte("data:")) && !bytes.HasPrefix(b, []byte("id:")) {
		return false // nothing, or a comment
	}
	return bytes.Contains(b, []byte("\n\n"))
}

// maxFrame is about where recv stops adding buffered events to a frame.
const maxFrame = 256 << 10

func (c *sseConn) recv() ([]byte, error) {
	if c.closing != nil {
		return nil, c.closing
	}
	var frame []byte
	for {
		data, err := c.next()
		if err != nil {
			err = c.failure(err)
			if len(frame) > 0 {
				c.closing = err
				return frame, nil
			}
			return nil, err
		}
		if m, perr := parseMsg(data); perr == nil && m.T == room.TypeClose {
			ce := m.closeError()
			c.fail(ce)
			if len(frame) > 0 {
				c.closing = ce
				return frame, nil
			}
			return nil, ce
		}
		if len(frame) > 0 {
			frame = append(frame, '\n')
		}
		frame = append(frame, data...)
		if len(frame) >= maxFrame || !c.eventWaiting() {
			return frame, nil
		}
	}
}

// send posts a frame to sse/send, at most one at a time (the writer's).
func (c *sseConn) send(frame []byte) error {
	return postSend(&c.connState, c.t.hc, "sse/send", frame, &c.cr, c.t.opts.WriteTimeout)
}

// postSend posts a frame of client messages; a failure ends the
// connection with its reason.
func postSend(s *connState, hc *httpClient, endpoint string, frame []byte, cr *creds, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	// Not marked idempotent: were net/http to send it again on a new
	// connection at once, the copy could reach the server while the
	// first is still being handled there, and the server, which skips a
	// message whose first copy is under way, would apply the messages
	// after it first (see TestOfflineTenSeconds). A failed send ends the
	// connection instead; the reconnect resends what has no verdict.
	status, body, err := hc.post(ctx, endpoint, frame, cr, false)
	switch {
	case err != nil:
		err = s.failure(err)
	case status != http.StatusNoContent && status != http.StatusOK:
		err = sessionStatus(endpoint, status, body)
	default:
		return nil
	}
	s.fail(err)
	return s.failure(err)
}

func (c *sseConn) close(bool) {
	c.once.Do(func() {
		c.cancel()
		if c.idle != nil {
			c.idle.Stop()
		}
		if c.body != nil {
			c.body.Close()
		}
	})
}
