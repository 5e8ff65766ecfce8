package roomtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Conn is one client connection of the transport under test, at the level
// of whole protocol messages. Send and Recv may be called concurrently.
type Conn interface {
	// Send sends one client message (a JSON object).
	Send(ctx context.Context, msg []byte) error
	// Recv returns the next server message (one JSON object; a transport
	// that batches messages splits them). When the server has closed the
	// connection it returns an error that errors.As finds a *CloseError
	// in, if the transport carried the close code.
	Recv(ctx context.Context) ([]byte, error)
	// Close cuts the connection abruptly, as a failing network would.
	Close() error
}

// CloseError is a close code and reason the server sent.
type CloseError struct {
	Code int
	Text string
}

func (e *CloseError) Error() string { return fmt.Sprintf("closed by server: %d %s", e.Code, e.Text) }

// Config is what a scenario needs of the server it connects to. Zero
// fields mean the server's defaults.
type Config struct {
	ResumeWindow  time.Duration
	LogEntries    int // room log bound (entries)
	MaxQueueBytes int
}

// Dialer opens a connection to the server a Factory started.
type Dialer func(ctx context.Context) (Conn, error)

// Factory starts a server configured by cfg (stopping it with t.Cleanup)
// and returns a way to connect to it.
type Factory func(t *testing.T, cfg Config) Dialer

// Msg is a decoded server message.
type Msg struct {
	T       string          `json:"t"`
	SSeq    uint64          `json:"sseq"`
	Room    string          `json:"room"`
	CID     string          `json:"cid"`
	Mode    string          `json:"mode"`
	Seq     *uint64         `json:"seq"`
	V       *uint64         `json:"v"`
	From    string          `json:"from"`
	Key     string          `json:"key"`
	Event   string          `json:"event"`
	Code    string          `json:"code"`
	Text    string          `json:"msg"`
	Ops     json.RawMessage `json:"ops"`
	Data    json.RawMessage `json:"data"`
	Member  *Member         `json:"member"`
	Members []Member        `json:"members"`
	// welcome
	SID     string `json:"sid"`
	Token   string `json:"token"`
	Resumed bool   `json:"resumed"`
	Raw     []byte `json:"-"`
}

// Member is a member entry.
type Member struct {
	SID       string          `json:"sid"`
	User      json.RawMessage `json:"user"`
	Transport string          `json:"transport"`
}

func (m *Msg) seq() uint64 {
	if m.Seq == nil {
		return 0
	}
	return *m.Seq
}

func (m *Msg) v() uint64 {
	if m.V == nil {
		return 0
	}
	return *m.V
}

// Client is a protocol-level test client: it performs hello, checks that
// durable messages arrive with contiguous session seqs, acknowledges them,
// and queues everything it receives for the scenario to inspect.
type Client struct {
	t     testing.TB
	name  string
	conn  Conn
	SID   string
	Token string
	// Welcome is the hello reply.
	Welcome Msg

	mu     sync.Mutex
	cond   chan struct{} // closed and replaced when inbox grows
	inbox  []*Msg
	last   uint64 // highest sseq received
	err    error  // why the reader stopped
	cancel context.CancelFunc
	done   chan struct{}
	cid    atomic.Uint64
}

// Connect dials and says hello. resume, if non-nil, is the client to resume
// (its SID, Token and last sseq).
func Connect(ctx context.Context, t testing.TB, dial Dialer, name string, resume *Client) *Client {
	t.Helper()
	conn, err := dial(ctx)
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	hello := map[string]any{"t": "hello", "user": map[string]string{"name": name}}
	var last uint64
	if resume != nil {
		last = resume.Last()
		hello["resume"] = map[string]any{"sid": resume.SID, "token": resume.Token, "ack": last}
	}
	if err := conn.Send(ctx, mustJSON(hello)); err != nil {
		t.Fatalf("%s: hello: %v", name, err)
	}
	raw, err := conn.Recv(ctx)
	if err != nil {
		t.Fatalf("%s: welcome: %v", name, err)
	}
	var w Msg
	if err := json.Unmarshal(raw, &w); err != nil || w.T != "welcome" || w.SID == "" || w.Token == "" {
		t.Fatalf("%s: bad welcome %s (%v)", name, raw, err)
	}
	c := &Client{t: t, name: name, conn: conn, SID: w.SID, Token: w.Token, Welcome: w, cond: make(chan struct{}), done: make(chan struct{})}
	if w.Resumed {
		c.last = last
	}
	rctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.read(rctx)
	t.Cleanup(c.Stop)
	return c
}

func (c *Client) read(ctx context.Context) {
	defer close(c.done)
	for {
		raw, err := c.conn.Recv(ctx)
		if err != nil {
			c.fail(err)
			return
		}
		var m Msg
		if err := json.Unmarshal(raw, &m); err != nil {
			c.fail(fmt.Errorf("undecodable server message %q: %v", raw, err))
			return
		}
		m.Raw = raw
		c.mu.Lock()
		if m.SSeq != 0 {
			if m.SSeq != c.last+1 {
				c.mu.Unlock()
				c.fail(fmt.Errorf("session seq %d after %d: gap or duplicate (%s)", m.SSeq, c.last, raw))
				return
			}
			c.last = m.SSeq
		}
		c.inbox = append(c.inbox, &m)
		close(c.cond)
		c.cond = make(chan struct{})
		c.mu.Unlock()
		if m.SSeq != 0 {
			// Acks are best effort: a failed send means the
			// connection is going away, which Recv will report.
			c.conn.Send(ctx, fmt.Appendf(nil, `{"t":"ack","ack":%d}`, m.SSeq))
		}
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	close(c.cond)
	c.cond = make(chan struct{})
	c.mu.Unlock()
}

// Last returns the highest session seq received.
func (c *Client) Last() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Err returns why the reader stopped (nil while it runs).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Stop ends the reader and closes the connection abruptly.
func (c *Client) Stop() {
	c.cancel()
	c.conn.Close()
	<-c.done
}

// Send sends one message, built from fields.
func (c *Client) Send(ctx context.Context, fields map[string]any) {
	c.t.Helper()
	if err := c.conn.Send(ctx, mustJSON(fields)); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// SendRaw sends raw bytes as one message.
func (c *Client) SendRaw(ctx context.Context, raw []byte) {
	c.t.Helper()
	if err := c.conn.Send(ctx, raw); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// NextCID returns a fresh client message id.
func (c *Client) NextCID() string {
	return c.name + "-" + c.SID + "-" + strconv.FormatUint(c.cid.Add(1), 10)
}

// WaitFor returns the first message from index *from on for which match
// is true, advancing *from past it; it fails the test when ctx ends or the
// connection fails first.
func (c *Client) WaitFor(ctx context.Context, from *int, what string, match func(*Msg) bool) *Msg {
	c.t.Helper()
	for {
		c.mu.Lock()
		for ; *from < len(c.inbox); *from++ {
			if m := c.inbox[*from]; match(m) {
				*from++
				c.mu.Unlock()
				return m
			}
		}
		err, wait := c.err, c.cond
		c.mu.Unlock()
		if err != nil {
			c.t.Fatalf("%s: waiting for %s: connection failed: %v", c.name, what, err)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			c.t.Fatalf("%s: waiting for %s: %v", c.name, what, ctx.Err())
		}
	}
}

// Messages returns a copy of what has arrived so far.
func (c *Client) Messages() []*Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Msg(nil), c.inbox...)
}

// WaitErr waits until the reader stops and returns why.
func (c *Client) WaitErr(ctx context.Context) error {
	c.t.Helper()
	select {
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		c.t.Fatalf("%s: connection still open: %v", c.name, ctx.Err())
		return nil
	}
}

// Join joins room (since: nil for a fresh join) and returns the joined reply.
func (c *Client) Join(ctx context.Context, room string, since *uint64) *Msg {
	c.t.Helper()
	cid := c.NextCID()
	m := map[string]any{"t": "join", "room": room, "cid": cid}
	if since != nil {
		m["since"] = *since
	}
	from := c.mark()
	c.Send(ctx, m)
	return c.WaitFor(ctx, &from, "joined "+room, func(m *Msg) bool {
		if m.CID == cid && m.T == "error" {
			c.t.Fatalf("%s: join %s: %s", c.name, room, m.Raw)
		}
		return m.T == "joined" && m.CID == cid
	})
}

// mark returns the current end of the inbox.
func (c *Client) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inbox)
}

// Request sends fields with a fresh cid and returns the reply with that cid
// (ok or error).
func (c *Client) Request(ctx context.Context, fields map[string]any) *Msg {
	c.t.Helper()
	cid := c.NextCID()
	fields["cid"] = cid
	from := c.mark()
	c.Send(ctx, fields)
	return c.WaitFor(ctx, &from, fmt.Sprintf("reply to %v", fields["t"]), func(m *Msg) bool {
		return m.CID == cid && (m.T == "ok" || m.T == "error")
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
