package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/roomwire/roomwire/room"
)

// dialed is a connection that has completed its handshake.
type dialed struct {
	cn    conn
	first []byte // the welcome, and what followed it
	idx   int    // its transport's index in Client.transports
	hello uint64 // Client.hellos when its hello was sent
	ack   uint64 // the resume ack its hello carried
}

// run is the client's supervisor and, while a connection is up, its
// reader: it connects, serves the connection until it fails (or until an
// upgrade hands it a better one), waits out the backoff, and again, until
// the client closes.
func (c *Client) run() {
	defer c.wg.Done()
	attempt := 0
	var (
		err      error
		next     *dialed
		switched bool
	)
	for c.ctx.Err() == nil {
		if next == nil {
			c.mu.Lock()
			c.setState(StateConnecting)
			c.mu.Unlock()
			next, err = c.connect()
			if err == nil {
				attempt = 0
			}
		}
		if next != nil {
			d := next
			next, err = c.serve(d, switched)
			switched = next != nil
			if switched {
				continue
			}
		}
		if c.ctx.Err() != nil || terminal(err) {
			break
		}
		d := backoff(attempt, c.opts.MinBackoff, c.opts.MaxBackoff, nil)
		attempt++
		c.mu.Lock()
		c.stats.LastClose = err
		c.setState(StateDisconnected)
		c.mu.Unlock()
		c.log.Info("roomwire client: reconnecting", "in", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
		}
	}
	if next != nil { // an upgrade that arrived as the client closed
		next.cn.close(true)
	}
	c.shutdown(err)
	for _, t := range c.transports {
		if ic, ok := t.(idleCloser); ok {
			ic.closeIdle()
		}
	}
}

// connect dials the transports, starting with the one that worked last,
// and returns the first connection that completes the handshake. There is
// no delay between transports: behind a proxy that refuses WebSocket the
// first connection is over SSE as soon as the WebSocket handshake fails.
func (c *Client) connect() (*dialed, error) {
	c.mu.Lock()
	hello := room.Envelope{Type: room.TypeHello, User: c.opts.User}
	if c.sid != "" {
		hello.Resume = &room.Resume{SID: c.sid, Token: c.token, Ack: c.lastSSeq}
	}
	start := c.pref
	c.mu.Unlock()
	n := len(c.transports)
	var errs []error
	var fatal error
	for k := range n {
		i := (start + k) % n
		t := c.transports[i]
		body, err := encode(&hello)
		if err != nil {
			return nil, err
		}
		var ack uint64
		if hello.Resume != nil {
			ack = hello.Resume.Ack
		}
		c.mu.Lock()
		c.hellos++
		gen := c.hellos
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.HandshakeTimeout)
		t0 := time.Now()
		cn, first, err := t.dial(ctx, body)
		cancel()
		if err == nil {
			return &dialed{cn: cn, first: first, idx: i, hello: gen, ack: ack}, nil
		}
		if c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		c.log.Info("roomwire client: transport failed", "transport", t.name(), "after", time.Since(t0), "err", err)
		var se *sessionError
		if errors.As(err, &se) {
			// The server welcomed the client before the connection
			// failed (an SSE stream that turned out buffered): resume
			// that session on the next transport instead of opening
			// another. The acknowledgement stands if it is the
			// client's own session.
			ack := uint64(0)
			if hello.Resume != nil && se.w.SID == hello.Resume.SID {
				ack = hello.Resume.Ack
			}
			hello.Resume = &room.Resume{SID: se.w.SID, Token: se.w.Token, Ack: ack}
		}
		if terminal(err) && fatal == nil {
			// Refused (401, 403, a bad hello). Another transport may
			// still be let through (a proxy that answers WebSocket with
			// 403); if none is, this refusal stands.
			fatal = err
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.name(), err))
	}
	if fatal != nil {
		return nil, fatal
	}
	return nil, errors.Join(errs...)
}

// welcome is the server's reply to hello.
type welcome struct {
	Type    string `json:"t"`
	SID     string `json:"sid"`
	Token   string `json:"token"`
	Resumed bool   `json:"resumed"`
	Window  int64  `json:"window"`
	Ticket  string `json:"ticket"` // SSE: for the first stream
}

// errOwnTakeover: the connection was closed with 4004 because this client
// itself resumed its session on a newer connection (an upgrade, or a
// reconnect the old connection had not noticed). Not terminal.
var errOwnTakeover = errors.New("client: the session moved to a newer connection of this client")

// serve runs one connection: it takes the welcome, starts the writer (and,
// on any transport but the best, the upgrader), and reads until the
// connection fails. It returns the connection to continue on when an
// upgrade succeeded.
func (c *Client) serve(d *dialed, switched bool) (*dialed, error) {
	cn, first := d.cn, d.first
	name := c.transports[d.idx].name()
	head, rest := first, []byte(nil)
	if i := bytes.IndexByte(first, '\n'); i >= 0 {
		head, rest = first[:i], first[i+1:]
	}
	var w welcome
	if err := json.Unmarshal(head, &w); err != nil || w.Type != room.TypeWelcome || w.SID == "" {
		cn.close(false)
		if m, perr := parseMsg(head); perr == nil && m.T == room.TypeClose {
			return nil, m.closeError()
		}
		return nil, fmt.Errorf("client: expected welcome, got %.200q", head)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.close(true)
		return nil, ErrClosed
	}
	c.conn = cn
	c.stats.Transport = name
	c.pref = d.idx
	c.lastRecv = time.Now()
	c.onWelcome(&w, switched)
	if w.Resumed && d.ack < c.ackedSSeq {
		c.ackedSSeq = d.ack // what the old connection applied since is acknowledged anew
	}
	c.setState(StateConnected)
	c.mu.Unlock()
	c.log.Info("roomwire client: connected", "transport", name, "sid", w.SID, "resumed", w.Resumed, "upgrade", switched)

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.write(cn, stop)
	}()
	var (
		upCancel   = func() {}
		upDone     chan struct{}
		upgraded   = make(chan *dialed, 1)
		readerDone = make(chan struct{})
	)
	if d.idx > 0 && c.opts.UpgradeInterval > 0 {
		upCtx, cancel := context.WithCancel(c.ctx)
		upCancel = cancel
		upDone = make(chan struct{})
		go func() {
			defer close(upDone)
			c.upgrade(upCtx, d, readerDone, upgraded)
		}()
	}
	c.signal()
	var err error
	if len(rest) > 0 {
		err = c.handleFrame(rest)
	}
	for err == nil {
		var frame []byte
		if frame, err = cn.recv(); err == nil {
			err = c.handleFrame(frame)
		}
	}
	var ce *CloseError
	if errors.As(err, &ce) && ce.Code == room.ReasonReplaced.Code {
		c.mu.Lock()
		own := c.hellos != d.hello
		c.mu.Unlock()
		if own {
			err = fmt.Errorf("%w (%d %s)", errOwnTakeover, ce.Code, ce.Text)
		}
	}
	close(readerDone)
	var next *dialed
	if upDone != nil {
		if !errors.Is(err, errOwnTakeover) {
			upCancel() // the connection failed by itself: reconnect now
		}
		// Otherwise the upgrader's hello took the session over: its
		// handshake is about to finish (or fail, and the client
		// reconnects).
		<-upDone
		upCancel()
		select {
		case next = <-upgraded:
		default:
		}
	}
	close(stop)
	cn.close(false)
	<-writerDone
	c.mu.Lock()
	c.conn = nil
	if next == nil {
		c.stats.Drops++
	}
	c.mu.Unlock()
	return next, err
}

// upgrade waits, checks whether a transport better than cur's works, and if
// one does, resumes the session over it and hands the new connection to
// out, then closes cur (which ends serve's reader). It returns when it has
// done so, when ctx ends, or, between attempts, once cur's reader has
// ended (readerDone).
func (c *Client) upgrade(ctx context.Context, cur *dialed, readerDone <-chan struct{}, out chan<- *dialed) {
	for {
		c.mu.Lock()
		fails := c.upFails
		c.mu.Unlock()
		t := time.NewTimer(upgradeDelay(c.opts.UpgradeInterval, fails, rand.Float64))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-readerDone:
			t.Stop()
			return
		case <-t.C:
		}
		better := -1
		for i := range cur.idx {
			pctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
			err := c.transports[i].probe(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				better = i
				break
			}
			c.log.Debug("roomwire client: upgrade check failed", "transport", c.transports[i].name(), "err", err)
		}
		if better < 0 {
			c.mu.Lock()
			c.upFails++
			c.mu.Unlock()
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
		p, _ := cur.cn.(pauser)
		if p != nil {
			p.pause(dctx)
		}
		c.mu.Lock()
		if c.closed || c.sid == "" {
			c.mu.Unlock()
			cancel()
			if p != nil {
				p.resume()
			}
			return
		}
		hello := room.Envelope{Type: room.TypeHello, User: c.opts.User,
			Resume: &room.Resume{SID: c.sid, Token: c.token, Ack: c.lastSSeq}}
		c.hellos++
		gen := c.hellos
		c.mu.Unlock()
		body, err := encode(&hello)
		var cn conn
		var first []byte
		if err == nil {
			cn, first, err = c.transports[better].dial(dctx, body)
		}
		cancel()
		if err != nil && p != nil {
			p.resume()
		}
		if err != nil {
			// The server may have handed the session to the failed
			// connection already, closing cur with 4004: serve then
			// sees readerDone closed and reconnects.
			c.log.Info("roomwire client: upgrade failed", "transport", c.transports[better].name(), "err", err)
			c.mu.Lock()
			c.upFails++
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		c.upFails = 0
		c.mu.Unlock()
		c.log.Info("roomwire client: upgrading", "from", c.transports[cur.idx].name(), "to", c.transports[better].name())
		out <- &dialed{cn: cn, first: first, idx: better, hello: gen, ack: hello.Resume.Ack}
		cur.cn.close(false)
		return
	}
}

// upgradeDelay is the wait before an upgrade check after fails checks that
// found nothing better: uniform in [d/2, 3d/2), d = base*2^min(fails, 3).
func upgradeDelay(base time.Duration, fails int, rnd func() float64) time.Duration {
	d := base << min(fails, 3)
	return d/2 + time.Duration(rnd()*float64(d))
}

// write is a connection's only writer. It sends what the client has
// queued, batched into frames of at most MaxMessageBytes, acknowledges the
// durable messages the reader has applied, and pings when the connection
// has been quiet for PingInterval. On connections where an ack costs a
// request of its own (lazyAcker), an ack goes alone only once ackBatch
// messages await it or ackDelay has passed; until then it waits to ride
// on the next frame.
func (c *Client) write(cn conn, stop <-chan struct{}) {
	tick := time.NewTicker(c.opts.PingInterval)
	defer tick.Stop()
	_, lazy := cn.(lazyAcker)
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	defer ackTimer.Stop()
	armed := false
	ping, ackDue := false, !lazy
	for {
		select {
		case <-stop:
			return
		case <-c.wake:
		case <-ackTimer.C:
			armed, ackDue = false, true
		case <-tick.C:
			c.mu.Lock()
			ping = time.Since(c.lastRecv) >= c.opts.PingInterval
			c.mu.Unlock()
		}
		for {
			frame, withheld := c.nextFrame(ping, ackDue)
			ping = false
			if withheld && !armed {
				ackTimer.Reset(ackDelay)
				armed = true
			}
			if frame == nil {
				break
			}
			err := cn.send(frame)
			c.mu.Lock()
			c.sending = false
			close(c.sent)
			c.sent = make(chan struct{})
			c.mu.Unlock()
			if err != nil {
				c.log.Debug("roomwire client: write failed", "err", err)
				cn.close(false)
				return
			}
		}
		ackDue = !lazy
	}
}

// nextFrame takes the next frame to write: the ack first, then queued
// messages in order, then ephemeral values, up to MaxMessageBytes (a
// single larger message cannot happen: Patch and Publish refuse them).
// An ack goes in when ackNow is set, when the frame carries something
// else anyway, or when ackBatch messages await it; otherwise withheld
// reports that one is waiting. It returns a nil frame when there is
// nothing to send.
func (c *Client) nextFrame(ping, ackNow bool) (frame []byte, withheld bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	const ackRoom = 48 // {"t":"ack","ack":<20 digits>} and a newline
	limit := c.opts.MaxMessageBytes - ackRoom
	var buf []byte
	add := func(msg []byte) bool {
		if len(buf) > 0 && len(buf)+1+len(msg) > limit {
			return false
		}
		if len(buf) > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, msg...)
		return true
	}
	if c.lastSSeq > c.ackedSSeq && c.nextLen()+ackRoom > c.opts.MaxMessageBytes {
		// The next message fills a frame by itself: the ack goes first,
		// alone.
		c.ackedSSeq = c.lastSSeq
		c.sending = true
		return fmt.Appendf(nil, `{"t":"ack","ack":%d}`, c.lastSSeq), false
	}
	full := false
	for len(c.sendq) > 0 && !full {
		e := c.sendq[0]
		if !e.settled && !add(e.body) {
			full = true
			break
		}
		c.sendq[0] = nil
		c.sendq = c.sendq[1:]
	}
	if len(c.sendq) == 0 {
		c.sendq = nil
	}
	for len(c.ephOrder) > 0 && !full {
		k := c.ephOrder[0]
		if body, ok := c.eph[k]; ok && c.rooms[k.room] != nil && !add(body) {
			full = true
			break
		}
		delete(c.eph, k)
		c.ephOrder = c.ephOrder[1:]
	}
	if ping && !full {
		add([]byte(`{"t":"ping"}`))
	}
	if c.lastSSeq > c.ackedSSeq {
		if ackNow || len(buf) > 0 || c.lastSSeq-c.ackedSSeq >= ackBatch {
			ack := fmt.Appendf(nil, `{"t":"ack","ack":%d}`, c.lastSSeq)
			if len(buf) > 0 {
				ack = append(append(ack, '\n'), buf...)
			}
			buf = ack
			c.ackedSSeq = c.lastSSeq
		} else {
			withheld = true
		}
	}
	c.sending = buf != nil
	return buf, withheld
}

// nextLen returns the size of the next message nextFrame would send (0 for
// none). Called with mu held.
func (c *Client) nextLen() int {
	for _, e := range c.sendq {
		if !e.settled {
			return len(e.body)
		}
	}
	for _, k := range c.ephOrder {
		if body, ok := c.eph[k]; ok && c.rooms[k.room] != nil {
			return len(body)
		}
	}
	return 0
}
