package signaling

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"
)

// LinkOptions configures a Link. Room, Self, Peer, Send and API are
// required; zero durations and sizes mean the defaults each field names.
type LinkOptions struct {
	// Room is the room both members are in; signals and relays go through
	// it.
	Room string
	// Self and Peer are the session ids of this member and the other. The
	// member whose id sorts first makes the offer.
	Self, Peer string
	// Send sends one client message (a JSON object) over this member's
	// session, on whatever transport carries it. The link calls it from
	// its own goroutine, one call at a time.
	Send func(ctx context.Context, msg []byte) error
	// API creates the PeerConnection; it must come from NewAPI
	// (DataChannels detached). Share one API between links.
	API *webrtc.API
	// Configuration is the PeerConnection's (ICE servers).
	Configuration webrtc.Configuration
	// RelayOnly skips the direct path: every message goes through the
	// server relay.
	RelayOnly bool
	// ConnectTimeout is how long the direct path may take to open; after
	// it the PeerConnection is closed and the link stays on the relay.
	// Messages never wait for it: until the direct channel is open they
	// go through the relay. Default 10 s.
	ConnectTimeout time.Duration
	// Window is the most data messages sent and not yet acknowledged;
	// Send blocks while it is full. Default 1024.
	Window int
	// AckDelay is how long a receiver may hold back an acknowledgement
	// (it acknowledges at once after 32 messages). Default 10 ms.
	AckDelay time.Duration
	// Retransmit is how long a sent message may stay unacknowledged
	// before the link sends it again on its current path. Default 2 s.
	Retransmit time.Duration
	// Logger receives link events. Default: discard.
	Logger *slog.Logger
}

// MaxPayload is the largest data a link sends in one message: a relayed
// message must stay under the server's 64 KiB message limit.
const MaxPayload = 60 << 10

// inboxLimit bounds received messages waiting for Recv; beyond it, data is
// not acknowledged (the sender retransmits later) and ephemeral values are
// dropped.
const inboxLimit = 4096

// Path says how a link's messages travel.
type Path int

const (
	// PathRelay: through the server (relay messages over the sessions).
	PathRelay Path = iota
	// PathDirect: over the peers' own DataChannel.
	PathDirect
)

func (p Path) String() string {
	if p == PathDirect {
		return "direct"
	}
	return "relay"
}

// Message is one message a link received.
type Message struct {
	Data json.RawMessage
	// Key is the key of an ephemeral value; empty for durable data.
	Key string
	// Direct is true when it came over the direct channel.
	Direct bool
}

// LinkStats counts a link's traffic. Data counts are per message.
type LinkStats struct {
	SentDirect, SentRelay uint64 // data messages, first transmissions
	Resent                uint64 // data messages sent again (path change, timeout)
	RecvDirect, RecvRelay uint64 // data messages accepted
	Duplicates            uint64 // data messages received again and dropped
	EphDirect, EphRelay   uint64 // ephemeral values sent
	AcksDirect, AcksRelay uint64 // acknowledgements sent
}

// ErrLinkClosed is returned by a closed link's methods.
var ErrLinkClosed = errors.New("signaling: link closed")

// ErrTooLarge is returned by Send for data over MaxPayload.
var ErrTooLarge = errors.New("signaling: message over MaxPayload")

// Link is a message channel between two members of a room: reliable,
// ordered and exactly once (Send), plus latest-wins ephemeral values
// (SendEphemeral). It negotiates a direct DataChannel through signal
// messages and uses it while it is open; otherwise, and from the first
// message until it opens, messages go through the server relay. When the
// direct path dies, every unacknowledged message is sent again through the
// relay; per-link sequence numbers drop duplicates at the receiver.
//
// The link owns one goroutine, which does all negotiation and every write,
// and one reader goroutine per open DataChannel. Feed it the server
// messages meant for it with Deliver. All methods are safe for concurrent
// use.
type Link struct {
	o       LinkOptions
	cid     string // prefix of this link's client message ids
	offerer bool
	ctx     context.Context
	cancel  context.CancelFunc

	reqs      chan sendReq
	in        chan inbound
	frames    chan directFrame
	wake      chan struct{} // capacity 1: evq has events
	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	slots     chan struct{} // the send window
	readers   sync.WaitGroup

	mu        sync.Mutex
	evq       []event
	inbox     []Message
	inboxWake chan struct{} // closed and replaced when inbox grows
	path      Path
	pathWake  chan struct{} // closed and replaced when path changes
	err       error
	stats     LinkStats

	// Owned by the loop goroutine.
	pc        *webrtc.PeerConnection
	gen       int
	remoteSet bool
	queued    []Signal // candidates waiting for the remote description
	rel, eph  datachannel.ReadWriteCloser
	direct    bool
	abandoned bool // the direct path failed or timed out; relay only
	nextN     uint64
	unacked   []sent
	recvNext  uint64
	reorder   map[uint64]json.RawMessage
	ackDue    int
	ephN      uint64
	ephSeen   map[string]uint64
	cidN      uint64
}

type sendReq struct {
	data  json.RawMessage
	key   string // ephemeral if set
	reply chan error
}

type sent struct {
	n   uint64
	raw []byte
	at  time.Time
}

type directFrame struct {
	gen int
	raw []byte
}

type eventKind int

const (
	evCandidate eventKind = iota
	evState
	evOpen
	evChannelDone
)

type event struct {
	kind  eventKind
	gen   int
	cand  *webrtc.ICECandidate
	state webrtc.PeerConnectionState
	label string
	rw    datachannel.ReadWriteCloser
}

// NewLink starts a link to opts.Peer. The offerer (the member whose id
// sorts first) sends its offer at once, so the other member should have
// its link (or a buffer for its messages) before then.
func NewLink(opts LinkOptions) (*Link, error) {
	o := opts
	if o.Room == "" || o.Self == "" || o.Peer == "" || o.Self == o.Peer || o.Send == nil {
		return nil, errors.New("signaling: a link needs Room, Self, Peer (distinct) and Send")
	}
	if o.API == nil && !o.RelayOnly {
		return nil, errors.New("signaling: a link needs an API (see NewAPI), or RelayOnly")
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 1024
	}
	if o.AckDelay <= 0 {
		o.AckDelay = 10 * time.Millisecond
	}
	if o.Retransmit <= 0 {
		o.Retransmit = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := make([]byte, 6)
	rand.Read(b)
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		o:         o,
		cid:       "lnk-" + base64.RawURLEncoding.EncodeToString(b) + "-",
		offerer:   o.Self < o.Peer,
		ctx:       ctx,
		cancel:    cancel,
		reqs:      make(chan sendReq),
		in:        make(chan inbound, 256),
		frames:    make(chan directFrame, 256),
		wake:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
		slots:     make(chan struct{}, o.Window),
		inboxWake: make(chan struct{}),
		pathWake:  make(chan struct{}),
		recvNext:  1,
		reorder:   map[uint64]json.RawMessage{},
		ephSeen:   map[string]uint64{},
	}
	go l.run()
	return l, nil
}

// Send sends data (a JSON value of at most MaxPayload bytes) reliably and
// in order. It returns once the link has sent it on its current path, or
// blocks while the window is full; the link delivers it exactly once
// whatever happens to the direct path, as long as both sessions live.
func (l *Link) Send(ctx context.Context, data json.RawMessage) error {
	if len(data) > MaxPayload {
		return ErrTooLarge
	}
	if !json.Valid(data) {
		return fmt.Errorf("signaling: data is not valid JSON")
	}
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return l.closedErr()
	}
	if err := l.request(ctx, sendReq{data: data, reply: make(chan error, 1)}); err != nil {
		<-l.slots
		return err
	}
	return nil
}

// SendEphemeral sends the latest value of key (1 to 64 bytes): over the
// unordered, unreliable direct channel when open, else as a relay with
// key. It may be lost; a receiver never sees an older value of key after
// a newer one.
func (l *Link) SendEphemeral(ctx context.Context, key string, data json.RawMessage) error {
	if key == "" || len(key) > 64 {
		return errors.New("signaling: an ephemeral key is 1 to 64 bytes")
	}
	if len(data) > MaxPayload {
		return ErrTooLarge
	}
	if !json.Valid(data) {
		return fmt.Errorf("signaling: data is not valid JSON")
	}
	return l.request(ctx, sendReq{data: data, key: key, reply: make(chan error, 1)})
}

func (l *Link) request(ctx context.Context, r sendReq) error {
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return l.closedErr()
	}
	select {
	case err := <-r.reply:
		return err
	case <-l.done:
		return l.closedErr()
	}
}

// Recv returns the next message received, in order for data.
func (l *Link) Recv(ctx context.Context) (Message, error) {
	for {
		l.mu.Lock()
		if len(l.inbox) > 0 {
			m := l.inbox[0]
			l.inbox[0] = Message{}
			l.inbox = l.inbox[1:]
			l.mu.Unlock()
			return m, nil
		}
		wait := l.inboxWake
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case <-l.done:
			l.mu.Lock()
			n := len(l.inbox)
			l.mu.Unlock()
			if n == 0 {
				return Message{}, l.closedErr()
			}
		}
	}
}

// Deliver hands the link one server message (a JSON object as received on
// the session). It reports whether the message was the link's: a signal or
// relay from Peer in Room, or an error reply to one of the link's own
// messages. It may block briefly while the link is busy.
func (l *Link) Deliver(msg []byte) bool {
	var m inbound
	if json.Unmarshal(msg, &m) != nil {
		return false
	}
	switch m.T {
	case "signal", "relay":
		if m.Room != l.o.Room || m.From != l.o.Peer {
			return false
		}
	case "error":
		if !strings.HasPrefix(m.CID, l.cid) {
			return false
		}
	default:
		return false
	}
	select {
	case l.in <- m:
	case <-l.done:
	}
	return true
}

// Path returns the path messages take now.
func (l *Link) Path() Path {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// WaitPath waits until the link's path is p, or ctx ends.
func (l *Link) WaitPath(ctx context.Context, p Path) error {
	for {
		l.mu.Lock()
		cur, wait := l.path, l.pathWake
		l.mu.Unlock()
		if cur == p {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.done:
			return l.closedErr()
		}
	}
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Err returns why the link ended: nil while it runs, ErrLinkClosed after
// Close, or the error that ended it (for example the server refusing the
// peer: an error whose text has "not_member").
func (l *Link) Err() error {
	select {
	case <-l.done:
		return l.closedErr()
	default:
		return nil
	}
}

// Done is closed when the link has ended.
func (l *Link) Done() <-chan struct{} { return l.done }

func (l *Link) closedErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	return ErrLinkClosed
}

// Close tells the peer (bye), closes the PeerConnection and waits for the
// link's goroutines. Messages not yet acknowledged may be lost.
func (l *Link) Close() error {
	l.closeOnce.Do(func() { close(l.closing) })
	<-l.done
	return nil
}

// post queues a pion event for the loop; it never blocks.
func (l *Link) post(e event) {
	l.mu.Lock()
	l.evq = append(l.evq, e)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Link) run() {
	defer close(l.done)
	defer l.cancel()
	retx := time.NewTicker(l.o.Retransmit / 2)
	defer retx.Stop()
	connect := time.NewTimer(l.o.ConnectTimeout)
	defer connect.Stop()
	var ack *time.Timer
	var ackC <-chan time.Time
	defer func() {
		if ack != nil {
			ack.Stop()
		}
	}()
	if l.o.RelayOnly {
		l.abandoned = true
	} else if l.offerer {
		l.offer()
	}
	for {
		if l.ackDue > 0 && ackC == nil {
			if l.ackDue >= 32 {
				l.sendAck()
			} else {
				ack = time.NewTimer(l.o.AckDelay)
				ackC = ack.C
			}
		}
		select {
		case r := <-l.reqs:
			r.reply <- l.handleSend(r)
		case m := <-l.in:
			if err := l.handleServer(m); err != nil {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				l.teardown()
				return
			}
		case f := <-l.frames:
			if f.gen == l.gen {
				l.handleFrame(f.raw, true)
			}
		case <-l.wake:
			l.mu.Lock()
			evs := l.evq
			l.evq = nil
			l.mu.Unlock()
			for _, e := range evs {
				l.handleEvent(e)
			}
		case <-ackC:
			ackC = nil
			if l.ackDue > 0 {
				l.sendAck()
			}
		case <-retx.C:
			l.retransmit(time.Now())
		case <-connect.C:
			if !l.direct && !l.abandoned {
				l.o.Logger.Info("link: direct path did not open in time; relay only", "peer", l.o.Peer)
				l.dropDirect(true)
			}
		case <-l.closing:
			l.teardown()
			return
		}
	}
}

// teardown says bye and closes the PeerConnection, then waits for the
// readers.
func (l *Link) teardown() {
	if l.pc != nil {
		l.signal(Signal{Type: "bye", PC: l.gen})
		l.pc.Close()
		l.pc = nil
	}
	l.cancel()
	// Readers blocked on l.frames see ctx end.
	l.readers.Wait()
}

func (l *Link) nextCID() string {
	l.cidN++
	return fmt.Sprintf("%s%d", l.cid, l.cidN)
}

// sendServer sends one client message over the session.
func (l *Link) sendServer(m outbound) error {
	m.Room, m.To, m.CID = l.o.Room, l.o.Peer, l.nextCID()
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return l.o.Send(l.ctx, b)
}

func (l *Link) signal(s Signal) {
	if err := l.sendServer(outbound{T: "signal", Data: s}); err != nil {
		l.o.Logger.Debug("link: sending signal", "err", err)
	}
}

// newPC creates attempt gen's PeerConnection; pion's callbacks only post.
func (l *Link) newPC(gen int) error {
	pc, err := l.o.API.NewPeerConnection(l.o.Configuration)
	if err != nil {
		return err
	}
	l.pc, l.gen, l.remoteSet = pc, gen, false
	pc.OnICECandidate(func(c *webrtc.ICECandidate) { l.post(event{kind: evCandidate, gen: gen, cand: c}) })
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) { l.post(event{kind: evState, gen: gen, state: s}) })
	watch := func(dc *webrtc.DataChannel) {
		label := dc.Label()
		if label != LabelLink && label != LabelLinkEphemeral {
			dc.Close()
			return
		}
		dc.OnOpen(func() {
			rw, err := dc.Detach()
			if err != nil {
				return
			}
			l.post(event{kind: evOpen, gen: gen, label: label, rw: rw})
		})
	}
	if l.offerer {
		rel, err := pc.CreateDataChannel(LabelLink, nil)
		if err != nil {
			return err
		}
		unordered, zero := false, uint16(0)
		eph, err := pc.CreateDataChannel(LabelLinkEphemeral, &webrtc.DataChannelInit{Ordered: &unordered, MaxRetransmits: &zero})
		if err != nil {
			return err
		}
		watch(rel)
		watch(eph)
	} else {
		pc.OnDataChannel(watch)
	}
	return nil
}

// offer starts the next attempt (offerer only).
func (l *Link) offer() {
	if err := l.newPC(l.gen + 1); err != nil {
		l.o.Logger.Info("link: creating PeerConnection", "err", err)
		l.dropDirect(true)
		return
	}
	o, err := l.pc.CreateOffer(nil)
	if err == nil {
		err = l.pc.SetLocalDescription(o)
	}
	if err != nil {
		l.o.Logger.Info("link: offer", "err", err)
		l.dropDirect(true)
		return
	}
	l.signal(Signal{Type: "offer", PC: l.gen, SDP: o.SDP})
}

func (l *Link) handleServer(m inbound) error {
	switch m.T {
	case "error":
		if m.Code == "not_member" {
			return fmt.Errorf("signaling: the server refused the link to %s in %q: not_member (%s)", l.o.Peer, l.o.Room, m.Msg)
		}
		// Anything else (rate_limited, internal): retransmission covers
		// data; a lost signal leaves the link on the relay.
		l.o.Logger.Debug("link: server error", "code", m.Code, "msg", m.Msg)
	case "signal":
		var s Signal
		if json.Unmarshal(m.Data, &s) == nil {
			l.handleSignal(s)
		}
	case "relay":
		l.handleFrame(m.Data, false)
	}
	return nil
}

func (l *Link) handleSignal(s Signal) {
	switch s.Type {
	case "offer":
		if l.offerer || l.abandoned || s.PC < l.gen || (s.PC == l.gen && l.pc != nil) {
			if l.abandoned && !l.offerer {
				l.signal(Signal{Type: "bye", PC: s.PC})
			}
			return
		}
		if l.pc != nil {
			l.closePC()
		}
		if err := l.newPC(s.PC); err != nil {
			l.dropDirect(true)
			return
		}
		err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: s.SDP})
		var a webrtc.SessionDescription
		if err == nil {
			l.remoteSet = true
			l.applyQueued()
			a, err = l.pc.CreateAnswer(nil)
		}
		if err == nil {
			err = l.pc.SetLocalDescription(a)
		}
		if err != nil {
			l.o.Logger.Info("link: answering", "err", err)
			l.dropDirect(true)
			return
		}
		l.signal(Signal{Type: "answer", PC: s.PC, SDP: a.SDP})
	case "answer":
		if !l.offerer || l.pc == nil || s.PC != l.gen || l.remoteSet {
			return
		}
		if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP}); err != nil {
			l.o.Logger.Info("link: applying answer", "err", err)
			l.dropDirect(true)
			return
		}
		l.remoteSet = true
		l.applyQueued()
	case "candidate":
		if s.PC < l.gen || l.abandoned {
			return
		}
		if l.pc == nil || s.PC > l.gen || !l.remoteSet {
			// Before the remote description: queue, in arrival order.
			if len(l.queued) < 256 {
				l.queued = append(l.queued, s)
			}
			return
		}
		l.addCandidate(s)
	case "bye":
		if s.PC == l.gen && l.pc != nil {
			l.o.Logger.Info("link: peer closed the direct path", "peer", l.o.Peer)
			l.dropDirect(true)
		}
	}
}

// applyQueued adds the queued candidates of the current attempt, in the
// order they arrived, and forgets older ones.
func (l *Link) applyQueued() {
	q := l.queued
	l.queued = nil
	for _, s := range q {
		switch {
		case s.PC == l.gen:
			l.addCandidate(s)
		case s.PC > l.gen:
			l.queued = append(l.queued, s)
		}
	}
}

func (l *Link) addCandidate(s Signal) {
	if s.Candidate == nil || s.Candidate.Candidate == "" {
		return // end of candidates
	}
	if err := l.pc.AddICECandidate(*s.Candidate); err != nil {
		l.o.Logger.Debug("link: candidate", "err", err)
	}
}

func (l *Link) handleEvent(e event) {
	if e.gen != l.gen || l.pc == nil {
		if e.rw != nil {
			e.rw.Close()
		}
		return
	}
	switch e.kind {
	case evCandidate:
		s := Signal{Type: "candidate", PC: e.gen}
		if e.cand != nil {
			c := e.cand.ToJSON()
			s.Candidate = &c
		}
		l.signal(s)
	case evState:
		switch e.state {
		case webrtc.PeerConnectionStateConnected:
			if l.rel != nil {
				l.setDirect(true)
			}
		case webrtc.PeerConnectionStateDisconnected:
			l.setDirect(false)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			l.dropDirect(true)
		}
	case evOpen:
		if e.label == LabelLink {
			l.rel = e.rw
		} else {
			l.eph = e.rw
		}
		l.startReader(e.gen, e.label, e.rw)
		if e.label == LabelLink && l.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
			l.setDirect(true)
		}
	case evChannelDone:
		if e.label == LabelLink {
			l.dropDirect(true)
		} else {
			l.eph = nil
		}
	}
}

func (l *Link) startReader(gen int, label string, rw datachannel.ReadWriteCloser) {
	l.readers.Add(1)
	go func() {
		defer l.readers.Done()
		defer l.post(event{kind: evChannelDone, gen: gen, label: label})
		buf := make([]byte, MaxPayload+1024)
		for {
			n, err := rw.Read(buf)
			if err != nil {
				return
			}
			select {
			case l.frames <- directFrame{gen: gen, raw: bytes.Clone(buf[:n])}:
			case <-l.ctx.Done():
				return
			}
		}
	}()
}

// setDirect switches the path. Leaving the direct path sends every
// unacknowledged message again through the relay.
func (l *Link) setDirect(up bool) {
	if up == l.direct {
		return
	}
	l.direct = up
	l.mu.Lock()
	if up {
		l.path = PathDirect
	} else {
		l.path = PathRelay
	}
	close(l.pathWake)
	l.pathWake = make(chan struct{})
	l.mu.Unlock()
	l.o.Logger.Info("link: path", "peer", l.o.Peer, "path", l.path)
	if !up {
		l.resend(time.Now())
	}
}

// dropDirect closes the PeerConnection and stays on the relay; abandon
// means no later attempt.
func (l *Link) dropDirect(abandon bool) {
	if abandon {
		l.abandoned = true
	}
	if l.pc != nil {
		l.signal(Signal{Type: "bye", PC: l.gen})
		l.closePC()
	}
	l.setDirect(false)
}

func (l *Link) closePC() {
	l.pc.Close()
	l.pc, l.rel, l.eph, l.remoteSet = nil, nil, nil, false
}

func (l *Link) handleSend(r sendReq) error {
	if r.key != "" {
		l.ephN++
		raw, _ := json.Marshal(frame{K: kindEph, N: l.ephN, Key: r.key, D: r.data})
		if l.direct && l.eph != nil {
			if _, err := l.eph.WriteDataChannel(raw, true); err == nil {
				l.count(func(s *LinkStats) { s.EphDirect++ })
				return nil
			}
		}
		l.count(func(s *LinkStats) { s.EphRelay++ })
		return l.sendServer(outbound{T: "relay", Key: r.key, Data: json.RawMessage(raw)})
	}
	l.nextN++
	raw, _ := json.Marshal(frame{K: kindData, N: l.nextN, D: r.data})
	l.unacked = append(l.unacked, sent{n: l.nextN, raw: raw, at: time.Now()})
	if l.writeDirect(raw) {
		l.count(func(s *LinkStats) { s.SentDirect++ })
		return nil
	}
	l.count(func(s *LinkStats) { s.SentRelay++ })
	// A failed relay send is retransmitted later; the message is queued.
	if err := l.sendServer(outbound{T: "relay", Data: json.RawMessage(raw)}); err != nil {
		l.o.Logger.Debug("link: relay", "err", err)
	}
	return nil
}

// writeDirect writes raw on the direct reliable channel if it is up; a
// failed write ends the direct path.
func (l *Link) writeDirect(raw []byte) bool {
	if !l.direct || l.rel == nil {
		return false
	}
	if _, err := l.rel.WriteDataChannel(raw, true); err != nil {
		l.dropDirect(true)
		return false
	}
	return true
}

func (l *Link) count(f func(*LinkStats)) {
	l.mu.Lock()
	f(&l.stats)
	l.mu.Unlock()
}

func (l *Link) handleFrame(raw []byte, direct bool) {
	var f frame
	if json.Unmarshal(raw, &f) != nil {
		return
	}
	switch f.K {
	case kindAck:
		i := 0
		for i < len(l.unacked) && l.unacked[i].n <= f.N {
			i++
		}
		for range i {
			<-l.slots
		}
		clear(l.unacked[:i])
		l.unacked = l.unacked[i:]
	case kindData:
		l.ackDue++
		switch {
		case f.N < l.recvNext:
			l.count(func(s *LinkStats) { s.Duplicates++ })
		case f.N == l.recvNext:
			if !l.deliver(Message{Data: f.D, Direct: direct}) {
				return
			}
			l.count(func(s *LinkStats) {
				if direct {
					s.RecvDirect++
				} else {
					s.RecvRelay++
				}
			})
			l.recvNext++
			for {
				d, ok := l.reorder[l.recvNext]
				if !ok || !l.deliver(Message{Data: d, Direct: direct}) {
					break
				}
				delete(l.reorder, l.recvNext)
				l.recvNext++
			}
		default:
			if _, dup := l.reorder[f.N]; dup {
				l.count(func(s *LinkStats) { s.Duplicates++ })
			} else if len(l.reorder) < 2*l.o.Window {
				l.reorder[f.N] = f.D
			}
		}
	case kindEph:
		if f.Key == "" || f.N <= l.ephSeen[f.Key] {
			return // an older value overtaken by a newer one
		}
		if len(l.ephSeen) > 4096 {
			clear(l.ephSeen)
		}
		l.ephSeen[f.Key] = f.N
		l.deliver(Message{Data: f.D, Key: f.Key, Direct: direct})
	}
}

// deliver queues m for Recv; false when the inbox is full.
func (l *Link) deliver(m Message) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.inbox) >= inboxLimit {
		return false
	}
	l.inbox = append(l.inbox, m)
	close(l.inboxWake)
	l.inboxWake = make(chan struct{})
	return true
}

func (l *Link) sendAck() {
	l.ackDue = 0
	raw, _ := json.Marshal(frame{K: kindAck, N: l.recvNext - 1})
	if l.writeDirect(raw) {
		l.count(func(s *LinkStats) { s.AcksDirect++ })
		return
	}
	l.count(func(s *LinkStats) { s.AcksRelay++ })
	if err := l.sendServer(outbound{T: "relay", Data: json.RawMessage(raw)}); err != nil {
		l.o.Logger.Debug("link: relay ack", "err", err)
	}
}

// retransmit sends the unacknowledged messages again when the oldest has
// waited longer than Retransmit.
func (l *Link) retransmit(now time.Time) {
	if len(l.unacked) > 0 && now.Sub(l.unacked[0].at) >= l.o.Retransmit {
		l.resend(now)
	}
}

// resend sends every unacknowledged message again on the current path.
func (l *Link) resend(now time.Time) {
	for i := range l.unacked {
		s := &l.unacked[i]
		s.at = now
		l.count(func(st *LinkStats) { st.Resent++ })
		if l.writeDirect(s.raw) {
			continue
		}
		if err := l.sendServer(outbound{T: "relay", Data: json.RawMessage(s.raw)}); err != nil {
			l.o.Logger.Debug("link: relay resend", "err", err)
		}
	}
}
