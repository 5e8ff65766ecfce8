package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/roomwire/roomwire/room"
)

// lpTransport carries the session over long-polling ("<base>/longpoll/poll")
// and POST ("<base>/longpoll/send"), as docs/protocol-http.md specifies:
// hello by POST longpoll/hello; then one poll at a time, each carrying
// {"ack":N} for every durable message of the answers the client has
// applied, the next sent as soon as the last answer has been applied.
type lpTransport struct {
	hc   *httpClient
	opts *Options
}

func newLongPoll(hc *httpClient, o *Options) *lpTransport { return &lpTransport{hc: hc, opts: o} }

func (t *lpTransport) name() string { return TransportLongPoll }

func (t *lpTransport) dial(ctx context.Context, hello []byte) (conn, []byte, error) {
	w, head, err := t.hc.hello(ctx, "longpoll/hello", hello)
	if err != nil {
		return nil, nil, err
	}
	c := &lpConn{connState: newConnState(), t: t, cr: creds{w.SID, w.Token}}
	if w.Resumed {
		// The first poll acknowledges what the hello did: the messages
		// after it follow.
		var h room.Envelope
		if json.Unmarshal(hello, &h) == nil && h.Resume != nil {
			c.ack = h.Resume.Ack
		}
	}
	return c, head, nil
}

// probe says hello with a throwaway session and ends it.
func (t *lpTransport) probe(ctx context.Context) error {
	w, _, err := t.hc.hello(ctx, "longpoll/hello", []byte(`{"t":"hello"}`))
	if err != nil {
		return err
	}
	return t.hc.end(ctx, "longpoll/close", &creds{w.SID, w.Token})
}

// lpConn is a long-polling session's polls and sends.
type lpConn struct {
	connState
	t  *lpTransport
	cr creds

	// Owned by the reader.
	ack     uint64 // highest session seq of the answers returned by recv
	closing error  // a close message that ended the last answer

	once sync.Once

	// pause and resume (an upgrade under way) against the reader.
	mu         sync.Mutex
	paused     bool
	resumed    chan struct{}      // closed by resume
	pollCancel context.CancelFunc // the poll under way, if any
	pollDone   chan struct{}      // closed when it has returned
}

// pause stops polling: the poll under way is abandoned, and pause returns
// once it has returned, or when ctx ends. Every poll attaches the session
// to this connection, taking it from any other; while an upgrade attaches
// it elsewhere this connection must keep still (and leave the probe's
// pong to the new stream).
func (c *lpConn) pause(ctx context.Context) {
	c.mu.Lock()
	c.paused = true
	if c.resumed == nil {
		c.resumed = make(chan struct{})
	}
	cancel, done := c.pollCancel, c.pollDone
	c.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
	case <-c.ctx.Done():
	}
}

// resume polls again after pause: an upgrade that did not happen.
func (c *lpConn) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		c.paused = false
		close(c.resumed)
		c.resumed = nil
	}
}

// startPoll returns the context for the next poll, after waiting while
// the connection is paused; ok is false once the connection has ended.
func (c *lpConn) startPoll() (ctx context.Context, end func(), ok bool) {
	c.mu.Lock()
	for c.paused {
		ch := c.resumed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.ctx.Done():
			return nil, nil, false
		}
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil, nil, false
	}
	// The server holds a poll for 25 s by default; ReadTimeout must
	// exceed its hold.
	ctx, cancel := context.WithTimeout(c.ctx, c.t.opts.ReadTimeout)
	done := make(chan struct{})
	c.pollCancel, c.pollDone = cancel, done
	return ctx, func() {
		cancel()
		c.mu.Lock()
		c.pollCancel, c.pollDone = nil, nil
		c.mu.Unlock()
		close(done)
	}, true
}

func (c *lpConn) isPaused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused
}

// recv polls until an answer has messages (an empty answer, after the
// server's hold time, means "poll again").
func (c *lpConn) recv() ([]byte, error) {
	for {
		if c.closing != nil {
			return nil, c.closing
		}
		ctx, end, ok := c.startPoll()
		if !ok {
			return nil, c.failure(c.ctx.Err())
		}
		status, body, err := c.t.hc.post(ctx, "longpoll/poll", fmt.Appendf(nil, `{"ack":%d}`, c.ack), &c.cr, true)
		end()
		if err != nil && c.ctx.Err() == nil && c.isPaused() {
			continue // abandoned by pause: nothing was lost, the next poll repeats the ack
		}
		if err != nil {
			return nil, c.failure(err)
		}
		if status != http.StatusOK {
			err := sessionStatus("longpoll/poll", status, body)
			c.fail(err)
			return nil, c.failure(err)
		}
		var batch []json.RawMessage
		if err := json.Unmarshal(body, &batch); err != nil {
			err = fmt.Errorf("client: longpoll/poll: not a JSON array: %w", err)
			c.fail(err)
			return nil, err
		}
		var frame []byte
		for _, raw := range batch {
			var h struct {
				T    string `json:"t"`
				SSeq uint64 `json:"sseq"`
			}
			if err := json.Unmarshal(raw, &h); err != nil {
				err = fmt.Errorf("client: longpoll/poll: undecodable message %.200q: %w", raw, err)
				c.fail(err)
				return nil, err
			}
			if h.T == room.TypeClose {
				m, _ := parseMsg(raw)
				ce := m.closeError()
				if ce.Code == room.ReasonReplaced.Code && c.isPaused() {
					break // the upgrade's connection took over; resume polls again if it fails
				}
				c.closing = ce
				c.fail(ce)
				break
			}
			c.ack = max(c.ack, h.SSeq)
			if len(frame) > 0 {
				frame = append(frame, '\n')
			}
			frame = append(frame, bytes.TrimSpace(raw)...)
		}
		if len(frame) > 0 {
			return frame, nil
		}
	}
}

// send posts a frame to longpoll/send. Acks are left out: every poll
// carries one.
func (c *lpConn) send(frame []byte) error {
	if bytes.HasPrefix(frame, []byte(`{"t":"ack"`)) {
		_, rest, _ := bytes.Cut(frame, []byte{'\n'})
		frame = rest
	}
	if len(frame) == 0 {
		return nil
	}
	return postSend(&c.connState, c.t.hc, "longpoll/send", frame, &c.cr, c.t.opts.WriteTimeout)
}

func (c *lpConn) close(bool) { c.once.Do(c.cancel) }
