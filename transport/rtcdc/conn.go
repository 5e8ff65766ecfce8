package rtcdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/internal/httpsession"
	"github.com/roomwire/roomwire/transport/outbox"
)

// closeNormal ends a connection whose peer went away by itself.
var closeNormal = room.CloseReason{Code: 1000, Text: "bye", Reconnect: true}

// channel is one detached DataChannel with its flow-control signal.
type channel struct {
	label string
	dc    *webrtc.DataChannel
	rw    datachannel.ReadWriteCloserDeadliner
	low   chan struct{} // capacity 1: the buffered amount fell to the threshold
}

// conn is one PeerConnection with a client. Its run goroutine reads the
// reliable channel and starts the only writer, which also starts the reader
// of the ephemeral channel; run joins both and closes the PeerConnection
// before it returns. pion's callbacks only hand things to these goroutines
// through channels: they never write.
type conn struct {
	h    *Handler
	id   string
	pc   *webrtc.PeerConnection
	user json.RawMessage

	opened chan *channel // OnOpen hands over detached channels (capacity 2)

	once   sync.Once
	quit   chan struct{}
	reason room.CloseReason

	mu     sync.Mutex
	labels map[string]bool // channels announced so far
	ncand  int
}

func newConn(h *Handler, id string, pc *webrtc.PeerConnection, user json.RawMessage) *conn {
	c := &conn{h: h, id: id, pc: pc, user: user, opened: make(chan *channel, 2), quit: make(chan struct{}), labels: map[string]bool{}}
	pc.OnDataChannel(c.onDataChannel)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateFailed:
			c.close(room.ReasonHeartbeat)
		case webrtc.PeerConnectionStateClosed:
			c.close(closeNormal)
		}
	})
	return c
}

// close asks the connection to end with reason. It never blocks and is
// idempotent; the first reason wins.
func (c *conn) close(reason room.CloseReason) {
	c.once.Do(func() {
		c.reason = reason
		close(c.quit)
	})
}

// negotiate applies the client's offer and returns the answer SDP, with
// every server candidate in it.
func (c *conn) negotiate(ctx context.Context, offer webrtc.SessionDescription) (string, error) {
	if err := c.pc.SetRemoteDescription(offer); err != nil {
		return "", err
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	t := time.NewTimer(gatherTimeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
		return "", errors.New("gathering server candidates timed out")
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return c.pc.LocalDescription().SDP, nil
}

// abandon releases a connection whose negotiation failed before run.
func (c *conn) abandon() {
	c.pc.Close()
	c.h.forget(c, true)
}

func (c *conn) addCandidates(cands []webrtc.ICECandidateInit) error {
	c.mu.Lock()
	c.ncand += len(cands)
	over := c.ncand > maxCandidates
	c.mu.Unlock()
	if over {
		return fmt.Errorf("more than %d candidates", maxCandidates)
	}
	for _, cand := range cands {
		if cand.Candidate == "" {
			continue // end of candidates
		}
		if err := c.pc.AddICECandidate(cand); err != nil {
			return fmt.Errorf("candidate %q: %w", cand.Candidate, err)
		}
	}
	return nil
}

// onDataChannel is pion's callback for a channel the client announced. It
// accepts one of each label and closes anything else.
func (c *conn) onDataChannel(dc *webrtc.DataChannel) {
	label := dc.Label()
	c.mu.Lock()
	dup := c.labels[label]
	c.labels[label] = true
	c.mu.Unlock()
	if dup || (label != LabelReliable && label != LabelEphemeral) || (label == LabelReliable && !reliable(dc)) {
		dc.Close()
		return
	}
	ch := &channel{label: label, dc: dc, low: make(chan struct{}, 1)}
	dc.SetBufferedAmountLowThreshold(uint64(c.h.opts.MaxBufferedBytes / 4))
	dc.OnBufferedAmountLow(func() {
		select {
		case ch.low <- struct{}{}:
		default:
		}
	})
	dc.OnOpen(func() {
		rw, err := dc.DetachWithDeadline()
		if err != nil {
			c.close(room.ReasonProtocol)
			return
		}
		ch.rw = rw
		c.opened <- ch // capacity 2, one per label: never blocks
	})
}

func reliable(dc *webrtc.DataChannel) bool {
	return dc.Ordered() && dc.MaxRetransmits() == nil && dc.MaxPacketLifeTime() == nil
}

// run owns the connection: it waits for the reliable channel and hello,
// attaches the session, reads until the end, then tears everything down.
func (c *conn) run() {
	h := c.h
	var eph *channel
	pending := true
	defer func() {
		c.pc.Close()
		h.forget(c, pending)
	}()
	deadline := time.NewTimer(h.opts.ConnectTimeout)
	defer deadline.Stop()
	var rel *channel
	for rel == nil {
		select {
		case ch := <-c.opened:
			if ch.label == LabelReliable {
				rel = ch
			} else {
				eph = ch
			}
		case <-deadline.C:
			return
		case <-c.quit:
			return
		}
	}
	defer rel.rw.Close()
	rd := newMsgReader(rel.rw, int(h.opts.MaxMessageBytes))
	w, err := c.hello(rd, rel)
	pending = false
	h.donePending()
	if err != nil {
		reason := room.ReasonProtocol
		reason.Text = err.Error()
		c.closeOn(rel, reason)
		return
	}
	sess := w.Session
	gen, ok := sess.Attach("rtcdc", c.close)
	if !ok {
		c.closeOn(rel, sess.Reason())
		return
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.write(ctx, sess, w.Ack, rel, eph, &wg)
	}()
	err = c.read(ctx, sess, rd, false)
	if errors.Is(err, ErrTooLarge) {
		c.close(room.CloseReason{Code: 1009, Text: "message too big", Reconnect: true})
	}
	c.close(closeNormal) // no-op if a reason was already given
	<-writerDone
	cancel()
	c.pc.Close() // ends the ephemeral reader
	wg.Wait()
	sess.Detach(gen)
}

// hello reads the first message, which must be hello alone, opens or
// resumes the session and writes welcome.
func (c *conn) hello(rd *msgReader, rel *channel) (outbox.Welcome, error) {
	rel.rw.SetReadDeadline(time.Now().Add(c.h.opts.ConnectTimeout))
	raw, err := rd.next()
	if err != nil {
		return outbox.Welcome{}, err
	}
	rel.rw.SetReadDeadline(time.Time{})
	env, err := room.ParseEnvelope(raw)
	if err != nil {
		return outbox.Welcome{}, err
	}
	w, err := c.h.reg.Hello(env, "rtcdc", c.user)
	if err != nil {
		return outbox.Welcome{}, err
	}
	if err := writeMessage(rel.rw, w.Body, c.h.opts.MaxFrameBytes); err != nil {
		return outbox.Welcome{}, err
	}
	return w, nil
}

// closeOn tells the client why before run closes the PeerConnection.
func (c *conn) closeOn(ch *channel, reason room.CloseReason) {
	if len(reason.Text) > 120 {
		reason.Text = reason.Text[:120]
	}
	writeMessage(ch.rw, httpsession.CloseMessage(reason), c.h.opts.MaxFrameBytes)
	c.drain(ch)
}

// drain waits, at most a second, until ch has handed everything written to
// SCTP's peer, so that closing the PeerConnection does not cut off the last
// message.
func (c *conn) drain(ch *channel) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for ch.dc.BufferedAmount() > 0 {
		select {
		case <-ch.low: // the threshold may be above 0: poll again soon
		case <-t.C:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// read is a channel's read loop. The reliable channel carries everything
// (outbox.Session.Receive); the ephemeral channel only ephemeral messages
// (eph, relay with key, ping) and acks.
func (c *conn) read(ctx context.Context, sess *outbox.Session, rd *msgReader, ephemeral bool) error {
	hub := c.h.reg.Hub()
	for {
		raw, err := rd.next()
		if err != nil {
			return err
		}
		if !ephemeral {
			sess.Receive(ctx, raw)
			continue
		}
		for line := range bytes.SplitSeq(raw, []byte{'\n'}) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			env, err := room.ParseEnvelope(line)
			switch {
			case err != nil:
				sess.Send(room.ErrorMessage("", err))
			case env.Type == room.TypeAck:
				sess.Ack(env.Ack)
			case env.Type == room.TypeEph || env.Type == room.TypePing || (env.Type == room.TypeRelay && env.Key != ""):
				hub.Handle(ctx, sess, env)
			default:
				sess.Send(room.ErrorMessage(env.CID, fmt.Errorf("%w: only ephemeral messages on %s", room.ErrBadRequest, LabelEphemeral)))
			}
		}
	}
}

// write is the connection's only writer. Ephemeral values go on the
// ephemeral channel (before durable messages, which go on the reliable
// one); while that channel is missing or congested, and for a value too
// large for one of its messages, they go on the reliable channel.
func (c *conn) write(ctx context.Context, sess *outbox.Session, after uint64, rel, eph *channel, wg *sync.WaitGroup) {
	opts := c.h.opts
	startEph := func(ch *channel) {
		eph = ch
		wg.Go(func() {
			err := c.read(ctx, sess, newMsgReader(ch.rw, int(opts.MaxMessageBytes)), true)
			if errors.Is(err, ErrTooLarge) {
				c.close(room.CloseReason{Code: 1009, Text: "message too big", Reconnect: true})
			}
		})
	}
	if eph != nil {
		startEph(eph)
	}
	var (
		items         []outbox.Item
		relBuf, epBuf []byte
	)
	for {
		select {
		case <-c.quit:
			c.closeOn(rel, c.reason)
			c.endReliable(rel)
			return
		case ch := <-c.opened:
			if ch.label == LabelEphemeral && eph == nil {
				startEph(ch)
			} else {
				ch.rw.Close()
			}
			continue
		case <-sess.Wake():
		}
		// Flow control: pull nothing more while SCTP holds a lot.
		if !c.waitLow(rel) {
			continue // quit is closed: the next round ends the writer
		}
		items = sess.Pull(items[:0], after, opts.MaxFrameBytes)
		if len(items) == 0 {
			continue
		}
		relBuf, epBuf = relBuf[:0], epBuf[:0]
		ephOK := eph != nil && eph.dc.BufferedAmount() <= uint64(opts.MaxBufferedBytes)
		for _, it := range items {
			if it.Seq == 0 && ephOK && len(it.Body) <= opts.MaxFrameBytes {
				if len(epBuf)+1+len(it.Body) > opts.MaxFrameBytes {
					if _, err := eph.rw.WriteDataChannel(epBuf, true); err != nil {
						ephOK = false
					}
					epBuf = epBuf[:0]
				}
				if len(epBuf) > 0 {
					epBuf = append(epBuf, '\n')
				}
				epBuf = it.AppendTo(epBuf)
				continue
			}
			if len(relBuf) > 0 {
				relBuf = append(relBuf, '\n')
			}
			relBuf = it.AppendTo(relBuf)
			if it.Seq > 0 {
				after = it.Seq
			}
		}
		if len(epBuf) > 0 {
			eph.rw.WriteDataChannel(epBuf, true) // unreliable anyway: a failure loses ephemeral values only
		}
		if len(relBuf) > 0 {
			if err := writeMessage(rel.rw, relBuf, opts.MaxFrameBytes); err != nil {
				c.h.log.Debug("rtcdc write", "sid", sess.ID(), "err", err)
				c.close(closeNormal)
				c.endReliable(rel)
				return
			}
		}
		if cap(relBuf) > 4*opts.MaxFrameBytes {
			relBuf = nil // do not keep a one-off huge buffer
		}
	}
}

// endReliable closes the reliable channel (the client sees it close) and
// bounds run's reader: a closed stream's read returns only once the peer
// has answered the reset, which a dead peer never does.
func (c *conn) endReliable(rel *channel) {
	rel.rw.Close()
	rel.rw.SetReadDeadline(time.Now().Add(time.Second))
}

// waitLow waits until ch's buffered amount is at most MaxBufferedBytes. It
// returns false if the connection is ending or the peer read nothing for
// WriteTimeout.
func (c *conn) waitLow(ch *channel) bool {
	limit := uint64(c.h.opts.MaxBufferedBytes)
	if ch.dc.BufferedAmount() <= limit {
		return true
	}
	t := time.NewTimer(c.h.opts.WriteTimeout)
	defer t.Stop()
	for ch.dc.BufferedAmount() > limit {
		select {
		case <-ch.low:
		case <-c.quit:
			return false
		case <-t.C:
			c.close(room.CloseReason{Code: 1006, Text: "write timeout", Reconnect: true})
			return false
		}
	}
	return true
}
