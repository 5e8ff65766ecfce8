package rtcdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/pion/webrtc/v4"

	"github.com/roomwire/roomwire/signaling"
)

// DialOptions configures Dial. Zero fields mean the defaults.
type DialOptions struct {
	// API is the pion API to create the PeerConnection with; share one
	// between connections (see signaling.NewAPI, which Dial's API must come
	// from: DataChannels detached). Default: a new signaling.NewAPI(nil).
	API *webrtc.API
	// Configuration is the PeerConnection's (ICE servers).
	Configuration webrtc.Configuration
	// HTTPClient makes the negotiation requests. Default
	// http.DefaultClient.
	HTTPClient *http.Client
	// Header is added to every negotiation request (e.g. Authorization,
	// Origin).
	Header http.Header
	// MaxMessageBytes is the largest server message accepted (a joined
	// reply carries a whole document). Default 16 MiB.
	MaxMessageBytes int
}

// Conn is a client's PeerConnection with a roomwire server and its two
// DataChannels. Send, SendEphemeral and Recv may be called concurrently
// with each other; Recv by one goroutine at a time.
type Conn struct {
	pc       *webrtc.PeerConnection
	rel, eph *channel
	in       chan []byte
	readers  sync.WaitGroup
	done     chan struct{} // closed when both readers have ended
	stop     chan struct{} // closed by Close
	stopOnce sync.Once

	wmu sync.Mutex // one writer per channel at a time

	errMu sync.Mutex
	err   error
	once  sync.Once
}

// Dial negotiates a PeerConnection with the server whose negotiation
// endpoints are under url (e.g. "https://example.com/rt/rtc": Dial posts to
// url+"/offer" and url+"/candidate"), trickling its candidates, and returns
// once both DataChannels are open. The caller then sends hello.
func Dial(ctx context.Context, url string, opts *DialOptions) (*Conn, error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	if o.API == nil {
		api, err := signaling.NewAPI(nil)
		if err != nil {
			return nil, err
		}
		o.API = api
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 16 << 20
	}
	url = strings.TrimRight(url, "/")
	pc, err := o.API.NewPeerConnection(o.Configuration)
	if err != nil {
		return nil, err
	}
	c := &Conn{pc: pc, in: make(chan []byte, 64), done: make(chan struct{}), stop: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			pc.Close()
		}
	}()
	opened := make(chan *channel, 2)
	failed := make(chan struct{})
	var failOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			failOnce.Do(func() { close(failed) })
		}
	})
	open := func(label string, init *webrtc.DataChannelInit) error {
		dc, err := pc.CreateDataChannel(label, init)
		if err != nil {
			return err
		}
		ch := &channel{label: label, dc: dc, low: make(chan struct{}, 1)}
		dc.OnOpen(func() {
			rw, err := dc.DetachWithDeadline()
			if err == nil {
				ch.rw = rw
			}
			opened <- ch
		})
		return nil
	}
	unordered, zero := false, uint16(0)
	if err := open(LabelReliable, nil); err != nil {
		return nil, err
	}
	if err := open(LabelEphemeral, &webrtc.DataChannelInit{Ordered: &unordered, MaxRetransmits: &zero}); err != nil {
		return nil, err
	}

	// Trickle: candidates go to a poster goroutine, which sends them once
	// the offer's reply has named the negotiation.
	cands := make(chan *webrtc.ICECandidate, 64)
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		select {
		case cands <- cand:
		default: // more than 64 candidates: the rest are not needed
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, err
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, err
	}
	var ans Answer
	if err := post(ctx, o, url+"/offer", pc.LocalDescription(), &ans); err != nil {
		return nil, err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans.SDP}); err != nil {
		return nil, fmt.Errorf("rtcdc: the server's answer: %w", err)
	}
	postErr := make(chan error, 1)
	pctx, stopPosting := context.WithCancel(ctx)
	defer stopPosting()
	go func() { postErr <- trickle(pctx, o, url+"/candidate", ans.ID, cands) }()

	for c.rel == nil || c.eph == nil {
		select {
		case ch := <-opened:
			if ch.rw == nil {
				return nil, errors.New("rtcdc: detaching a DataChannel failed (the API must come from signaling.NewAPI)")
			}
			if ch.label == LabelReliable {
				c.rel = ch
			} else {
				c.eph = ch
			}
		case err := <-postErr:
			if err != nil {
				return nil, err
			}
			postErr = nil
		case <-failed:
			return nil, errors.New("rtcdc: the PeerConnection failed before its channels opened")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	stopPosting()
	if postErr != nil {
		<-postErr
	}
	c.readers.Add(2)
	go c.read(c.rel, o.MaxMessageBytes)
	go c.read(c.eph, o.MaxMessageBytes)
	go func() { c.readers.Wait(); close(c.done) }()
	ok = true
	return c, nil
}

// trickle posts the local candidates of negotiation id as they come, until
// the end of candidates or ctx.
func trickle(ctx context.Context, o DialOptions, url, id string, cands <-chan *webrtc.ICECandidate) error {
	for {
		var batch []webrtc.ICECandidateInit
		end := false
		select {
		case cand := <-cands:
			batch = append(batch, initOf(cand))
			end = cand == nil
		case <-ctx.Done():
			return nil
		}
	more:
		for !end {
			select {
			case cand := <-cands:
				batch = append(batch, initOf(cand))
				end = cand == nil
			default:
				break more
			}
		}
		if err := post(ctx, o, url, CandidateRequest{ID: id, Candidates: batch}, nil); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if end {
			return nil
		}
	}
}

func initOf(cand *webrtc.ICECandidate) webrtc.ICECandidateInit {
	if cand == nil {
		return webrtc.ICECandidateInit{} // end of candidates
	}
	return cand.ToJSON()
}

// post sends body as JSON and decodes a 200 reply into out.
func post(ctx context.Context, o DialOptions, url string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	for k, v := range o.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("rtcdc: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("rtcdc: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return &HTTPError{Status: resp.StatusCode, Body: string(rb)}
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return fmt.Errorf("rtcdc: bad reply from %s: %w", url, err)
		}
	}
	return nil
}

// HTTPError is a negotiation request the server refused.
type HTTPError struct {
	Status int
	Body   string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("rtcdc: HTTP %d: %s", e.Status, e.Body) }

func (c *Conn) read(ch *channel, max int) {
	defer c.readers.Done()
	rd := newMsgReader(ch.rw, max)
	for {
		m, err := rd.next()
		if err != nil {
			c.fail(err)
			return
		}
		select {
		case c.in <- bytes.Clone(m):
		case <-c.stop:
			return
		}
	}
}

func (c *Conn) fail(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	// One channel ending ends the connection: the other reader stops too.
	c.once.Do(func() { c.pc.Close() })
}

// Send sends msg (one or more '\n'-separated messages) on the reliable
// channel.
func (c *Conn) Send(ctx context.Context, msg []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeMessage(c.rel.rw, msg, 64<<10)
}

// SendEphemeral sends msg on the unordered, unreliable channel: it may be
// lost or overtaken. msg must fit one DataChannel message (64 KiB).
func (c *Conn) SendEphemeral(ctx context.Context, msg []byte) error {
	if len(msg) > 64<<10 {
		return ErrTooLarge
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.eph.rw.WriteDataChannel(msg, true)
	return err
}

// Recv returns the next server message (one DataChannel message, which may
// hold several '\n'-separated messages), from either channel. After the
// connection ends it returns what was already received, then the error
// that ended it.
func (c *Conn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case m := <-c.in:
		return m, nil
	default:
	}
	select {
	case m := <-c.in:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.in:
			return m, nil
		default:
		}
		c.errMu.Lock()
		defer c.errMu.Unlock()
		return nil, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes the PeerConnection and waits for the readers.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
	return nil
}

// ErrClosed is the error Recv reports after Close.
var ErrClosed = errors.New("rtcdc: connection closed")

// PeerConnection returns the underlying PeerConnection, for stats.
func (c *Conn) PeerConnection() *webrtc.PeerConnection { return c.pc }
