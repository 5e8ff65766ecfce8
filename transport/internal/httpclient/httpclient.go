// Package httpclient is a minimal Go client for roomwire's SSE and
// long-polling transports, written against the protocol with net/http
// only. Tests use it as a roomtest.Conn; it is not the public Go client.
//
// SSE and Poll are roomtest.Conns: Send and Recv may be called
// concurrently, Recv from one goroutine at a time. The first Send must be
// the hello; Recv returns the welcome first.
package httpclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/roomwire/roomwire/room/roomtest"
)

// Session headers (as in transport/internal/httpsession).
const (
	HeaderSession = "Roomwire-Session"
	HeaderToken   = "Roomwire-Token"
)

// Options configures a client. Zero fields mean defaults.
type Options struct {
	// Header is added to every request (for example an Origin).
	Header http.Header
}

// base is what both clients share: one private http.Transport, so that
// Close cuts only this client's connections, and the session credentials.
type base struct {
	url  string // endpoint prefix, e.g. http://host/rt/sse
	opts Options
	tr   *http.Transport
	hc   *http.Client

	life context.Context // canceled by Close
	cut  context.CancelFunc

	mu      sync.Mutex
	sid     string
	token   string
	welcome []byte
}

func newBase(url string, opts *Options) base {
	var o Options
	if opts != nil {
		o = *opts
	}
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}
	life, cut := context.WithCancel(context.Background())
	return base{url: strings.TrimRight(url, "/"), opts: o, tr: tr, hc: &http.Client{Transport: tr}, life: life, cut: cut}
}

// SID and Token return the session's credentials (empty before hello).
func (b *base) SID() string   { b.mu.Lock(); defer b.mu.Unlock(); return b.sid }
func (b *base) Token() string { b.mu.Lock(); defer b.mu.Unlock(); return b.token }

// request builds a request to endpoint with the session headers.
func (b *base) request(ctx context.Context, method, endpoint string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.url+"/"+endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range b.opts.Header {
		req.Header[k] = v
	}
	b.mu.Lock()
	if b.sid != "" {
		req.Header.Set(HeaderSession, b.sid)
		req.Header.Set(HeaderToken, b.token)
	}
	b.mu.Unlock()
	if body != nil {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	return req, nil
}

// StatusError is a refused request.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

// post sends body to endpoint and returns the response body of a 2xx.
func (b *base) post(ctx context.Context, endpoint string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.life, cancel)
	defer stop()
	req, err := b.request(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return nil, err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, &StatusError{resp.StatusCode, string(out)}
	}
	return out, nil
}

// hello posts the hello envelope and keeps the welcome.
func (b *base) hello(ctx context.Context, msg []byte) (map[string]json.RawMessage, error) {
	w, err := b.post(ctx, "hello", msg)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	var sid, token string
	if err := json.Unmarshal(w, &m); err != nil {
		return nil, fmt.Errorf("welcome %q: %v", w, err)
	}
	json.Unmarshal(m["sid"], &sid)
	json.Unmarshal(m["token"], &token)
	b.mu.Lock()
	b.sid, b.token, b.welcome = sid, token, w
	b.mu.Unlock()
	return m, nil
}

func (b *base) started() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sid != "" }

// takeWelcome returns the welcome once.
func (b *base) takeWelcome() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.welcome
	b.welcome = nil
	return w
}

// head decodes the fields of a server message the clients look at.
type head struct {
	T    string `json:"t"`
	SSeq uint64 `json:"sseq"`
}

// closeError decodes a close message.
func closeError(msg []byte) *roomtest.CloseError {
	var c struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(msg, &c)
	return &roomtest.CloseError{Code: c.Code, Text: c.Reason}
}

func typeOf(msg []byte) string {
	var h struct {
		T string `json:"t"`
	}
	json.Unmarshal(msg, &h)
	return h.T
}

// SSE is a client of the SSE transport: events from one GET stream,
// messages out by POST send, acknowledgements coalesced and posted by one
// background goroutine.
type SSE struct {
	base

	recvMu  sync.Mutex
	stream  io.ReadCloser
	br      *bufio.Reader
	streamC context.CancelFunc
	lastID  uint64 // last event id seen

	ackMu   sync.Mutex
	ackWant uint64
	ackSent uint64
	ackSig  chan struct{}
	ackDone chan struct{}
}

// NewSSE returns an SSE client for the endpoints under url (".../sse").
func NewSSE(url string, opts *Options) *SSE {
	c := &SSE{base: newBase(url, opts), ackSig: make(chan struct{}, 1), ackDone: make(chan struct{})}
	go c.acker()
	return c
}

// Send implements roomtest.Conn.
func (c *SSE) Send(ctx context.Context, msg []byte) error {
	if !c.started() {
		m, err := c.hello(ctx, msg)
		if err != nil {
			return err
		}
		var ticket string
		json.Unmarshal(m["ticket"], &ticket)
		return c.Open(ctx, ticket, 0)
	}
	if typeOf(msg) == "ack" {
		var a struct{ Ack uint64 }
		json.Unmarshal(msg, &a)
		c.ackMu.Lock()
		c.ackWant = max(c.ackWant, a.Ack)
		c.ackMu.Unlock()
		select {
		case c.ackSig <- struct{}{}:
		default:
		}
		return nil
	}
	_, err := c.post(ctx, "send", msg)
	return err
}

// acker posts the newest acknowledgement, one request at a time.
func (c *SSE) acker() {
	defer close(c.ackDone)
	for {
		select {
		case <-c.life.Done():
			return
		case <-c.ackSig:
		}
		c.ackMu.Lock()
		want, sent := c.ackWant, c.ackSent
		c.ackMu.Unlock()
		if want <= sent {
			continue
		}
		if _, err := c.post(c.life, "send", fmt.Appendf(nil, `{"t":"ack","ack":%d}`, want)); err == nil {
			c.ackMu.Lock()
			c.ackSent = max(c.ackSent, want)
			c.ackMu.Unlock()
		}
	}
}

// Ticket asks for a new stream ticket, acknowledging ack.
func (c *SSE) Ticket(ctx context.Context, ack uint64) (string, error) {
	b, err := c.post(ctx, "ticket", fmt.Appendf(nil, `{"ack":%d}`, ack))
	if err != nil {
		return "", err
	}
	var t struct{ Ticket string }
	if err := json.Unmarshal(b, &t); err != nil || t.Ticket == "" {
		return "", fmt.Errorf("ticket reply %q: %v", b, err)
	}
	return t.Ticket, nil
}

// Open opens the event stream with ticket; lastEventID, when non-zero, is
// sent as Last-Event-ID. Any stream open before is cut.
func (c *SSE) Open(ctx context.Context, ticket string, lastEventID uint64) error {
	sctx, cancel := context.WithCancel(c.life)
	req, err := c.request(sctx, http.MethodGet, "events?ticket="+ticket, nil)
	if err != nil {
		cancel()
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastEventID, 10))
	}
	stop := context.AfterFunc(ctx, cancel) // give up with ctx while connecting
	resp, err := c.hc.Do(req)
	stop()
	if err != nil {
		cancel()
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return &StatusError{resp.StatusCode, string(b)}
	}
	c.Cut()
	c.recvMu.Lock()
	c.stream, c.br, c.streamC = resp.Body, bufio.NewReader(resp.Body), cancel
	c.lastID = max(c.lastID, lastEventID)
	c.recvMu.Unlock()
	return nil
}

// Cut drops the event stream abruptly; the session waits out its resume
// window. A Recv under way returns an error.
func (c *SSE) Cut() {
	c.recvMu.Lock()
	cancel := c.streamC
	c.recvMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// LastEventID returns the id of the last durable event received.
func (c *SSE) LastEventID() uint64 {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	return c.lastID
}

// Recv implements roomtest.Conn. A close message ends the stream with a
// *roomtest.CloseError.
func (c *SSE) Recv(ctx context.Context) ([]byte, error) {
	if w := c.takeWelcome(); w != nil {
		return w, nil
	}
	c.recvMu.Lock()
	br, cancel := c.br, c.streamC
	c.recvMu.Unlock()
	if br == nil {
		return nil, errors.New("no stream")
	}
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	var data []byte
	var id string
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("event stream: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if data == nil {
				continue // a comment-only block
			}
			break
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, value...)
			if data == nil {
				data = []byte{}
			}
		case "id":
			id = string(value)
		}
	}
	if id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("event id %q: %v", id, err)
		}
		c.recvMu.Lock()
		c.lastID = n
		c.recvMu.Unlock()
	}
	var h head
	if err := json.Unmarshal(data, &h); err == nil && h.T == "close" {
		return nil, closeError(data)
	}
	return data, nil
}

// Close cuts the stream and every connection without a goodbye.
func (c *SSE) Close() error {
	c.cut()
	<-c.ackDone
	c.tr.CloseIdleConnections()
	return nil
}

// Poll is a client of the long-polling transport. Each Recv that finds
// nothing pending polls, acknowledging everything received so far.
type Poll struct {
	base

	recvMu  sync.Mutex
	ack     uint64
	pending [][]byte
	closing *roomtest.CloseError
}

// NewPoll returns a long-polling client for the endpoints under url
// (".../longpoll").
func NewPoll(url string, opts *Options) *Poll { return &Poll{base: newBase(url, opts)} }

// Send implements roomtest.Conn. Acknowledgements are not posted: the next
// poll carries them.
func (c *Poll) Send(ctx context.Context, msg []byte) error {
	if !c.started() {
		var h struct {
			Resume *struct{ Ack uint64 }
		}
		json.Unmarshal(msg, &h)
		if h.Resume != nil {
			c.SetAck(h.Resume.Ack)
		}
		_, err := c.hello(ctx, msg)
		return err
	}
	if typeOf(msg) == "ack" {
		return nil
	}
	_, err := c.post(ctx, "send", msg)
	return err
}

// SetAck sets what the next poll acknowledges (a resumed session starts
// from the ack its hello carried).
func (c *Poll) SetAck(ack uint64) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	c.ack = ack
}

// Recv implements roomtest.Conn.
func (c *Poll) Recv(ctx context.Context) ([]byte, error) {
	if w := c.takeWelcome(); w != nil {
		var h struct{ Resumed bool }
		json.Unmarshal(w, &h)
		if !h.Resumed {
			c.SetAck(0)
		}
		return w, nil
	}
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	for len(c.pending) == 0 {
		if c.closing != nil {
			return nil, c.closing
		}
		if err := c.poll(ctx); err != nil {
			return nil, err
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	return m, nil
}

// poll runs one poll. Called with recvMu held.
func (c *Poll) poll(ctx context.Context) error {
	b, err := c.post(ctx, "poll", fmt.Appendf(nil, `{"ack":%d}`, c.ack))
	if err != nil {
		return err
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(b, &batch); err != nil {
		return fmt.Errorf("poll answer %q: %v", b, err)
	}
	for _, m := range batch {
		var h head
		if err := json.Unmarshal(m, &h); err != nil {
			return fmt.Errorf("poll message %q: %v", m, err)
		}
		if h.T == "close" {
			c.closing = closeError(m)
			break
		}
		if h.SSeq > 0 {
			c.ack = h.SSeq
		}
		c.pending = append(c.pending, m)
	}
	return nil
}

// Ack returns the highest session seq received.
func (c *Poll) Ack() uint64 {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	return c.ack
}

// Close cuts any poll under way and every connection without a goodbye.
func (c *Poll) Close() error {
	c.cut()
	c.tr.CloseIdleConnections()
	return nil
}
