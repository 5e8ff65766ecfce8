package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/roomwire/roomwire/internal/wstest"
	"github.com/roomwire/roomwire/room/roomtest"
)

// Peer is a protocol-level client for tests in which servers die: unlike
// roomtest.Client it reports a broken connection as an error instead of
// failing the test. It acknowledges durable messages and keeps everything
// it receives.
type Peer struct {
	conn    *wstest.Conn
	SID     string
	Token   string
	Resumed bool

	mu     sync.Mutex
	msgs   []*roomtest.Msg
	last   uint64 // highest sseq
	err    error
	cond   chan struct{}
	done   chan struct{}
	cancel context.CancelFunc
}

// ErrGap: a session seq was skipped or repeated.
var ErrGap = errors.New("clustertest: session seq gap or duplicate")

// ConnectPeer dials url, says hello (resuming resume when non-nil) and
// starts reading.
func ConnectPeer(ctx context.Context, url, name string, resume *Peer) (*Peer, error) {
	c, err := wstest.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	hello := map[string]any{"t": "hello", "user": map[string]string{"name": name}}
	var last uint64
	if resume != nil {
		last = resume.Last()
		hello["resume"] = map[string]any{"sid": resume.SID, "token": resume.Token, "ack": last}
	}
	b, _ := json.Marshal(hello)
	if err := c.Send(ctx, b); err != nil {
		c.Close()
		return nil, err
	}
	raw, err := c.Recv(ctx)
	if err != nil {
		c.Close()
		return nil, err
	}
	var w roomtest.Msg
	if err := json.Unmarshal(raw, &w); err != nil || w.T != "welcome" {
		c.Close()
		return nil, fmt.Errorf("bad welcome %s (%v)", raw, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	p := &Peer{conn: c, SID: w.SID, Token: w.Token, Resumed: w.Resumed, cond: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	if w.Resumed {
		p.last = last
	}
	go p.read(rctx)
	return p, nil
}

func (p *Peer) read(ctx context.Context) {
	defer close(p.done)
	for {
		raw, err := p.conn.Recv(ctx)
		if err == nil {
			m := &roomtest.Msg{}
			if err = json.Unmarshal(raw, m); err == nil {
				m.Raw = raw
				p.mu.Lock()
				if m.SSeq != 0 && m.SSeq != p.last+1 {
					err = fmt.Errorf("%w: %d after %d", ErrGap, m.SSeq, p.last)
				} else {
					if m.SSeq != 0 {
						p.last = m.SSeq
					}
					p.msgs = append(p.msgs, m)
					close(p.cond)
					p.cond = make(chan struct{})
				}
				p.mu.Unlock()
				if err == nil && m.SSeq != 0 {
					p.conn.Send(ctx, fmt.Appendf(nil, `{"t":"ack","ack":%d}`, m.SSeq))
				}
			}
		}
		if err != nil {
			p.mu.Lock()
			p.err = err
			close(p.cond)
			p.cond = make(chan struct{})
			p.mu.Unlock()
			return
		}
	}
}

// Send sends one message.
func (p *Peer) Send(ctx context.Context, fields map[string]any) error {
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	return p.conn.Send(ctx, b)
}

// Wait returns the first message from index *from on that matches,
// advancing *from past it; or the connection's error, or ctx's.
func (p *Peer) Wait(ctx context.Context, from *int, match func(*roomtest.Msg) bool) (*roomtest.Msg, error) {
	for {
		p.mu.Lock()
		for ; *from < len(p.msgs); *from++ {
			if m := p.msgs[*from]; match(m) {
				*from++
				p.mu.Unlock()
				return m, nil
			}
		}
		err, wait := p.err, p.cond
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Messages returns what has arrived so far.
func (p *Peer) Messages() []*roomtest.Msg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*roomtest.Msg(nil), p.msgs...)
}

// Last is the highest session seq received.
func (p *Peer) Last() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// Done is closed when the reader has stopped.
func (p *Peer) Done() <-chan struct{} { return p.done }

// Close cuts the connection and waits for the reader.
func (p *Peer) Close() {
	p.cancel()
	p.conn.Close()
	<-p.done
}

// U64 reads an optional number field of a message.
func U64(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
