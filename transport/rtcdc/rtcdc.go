package rtcdc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/signaling"
	"github.com/roomwire/roomwire/transport/internal/httpsession"
	"github.com/roomwire/roomwire/transport/outbox"
)

// Options configures a Handler. Zero fields mean the defaults.
type Options struct {
	// AllowedOrigins lists the cross-site origins allowed to negotiate
	// (see origin.New). Default: same-origin and non-browser clients only.
	AllowedOrigins []string
	// Authenticate, if set, runs on the offer request: its error refuses
	// it with 401; its result is the user info others see.
	Authenticate func(*http.Request) (user json.RawMessage, err error)
	// MaxMessageBytes is the largest client message (one logical
	// DataChannel message, which may hold several lines). A larger one
	// ends the connection. Default 64 KiB.
	MaxMessageBytes int64
	// MaxRequestBytes bounds the body of an offer or candidate request.
	// Default 64 KiB.
	MaxRequestBytes int64

	// UDPAddr is the address of the one UDP socket that carries every
	// PeerConnection (ICE UDP mux), e.g. ":3478" or "203.0.113.7:3478".
	// An unspecified IP listens on every interface address (not loopback)
	// on that port; a loopback IP gathers a loopback candidate. Port 0
	// picks a free one. Default ":0". Ignored when UDPMux is set.
	UDPAddr string
	// UDPMux, if set, is an ICE UDP mux the caller owns (and closes after
	// Shutdown), instead of one opened on UDPAddr.
	UDPMux ice.UDPMux
	// NAT1To1IPs are the public addresses of a server behind a 1:1 NAT,
	// advertised instead of its interface addresses.
	NAT1To1IPs []string
	// AllowRemoteIP says which remote candidate addresses the server
	// sends to. Default signaling.PublicOnly: no loopback, private,
	// link-local or reserved address, so that a client cannot make the
	// server send packets to hosts on the server's own networks. Set it
	// (e.g. to signaling.LoopbackOnly, or a func allowing your LAN) for
	// clients on private networks.
	AllowRemoteIP func(net.IP) bool

	// ConnectTimeout bounds the time from the offer to the client's hello
	// on the reliable channel; a PeerConnection that has not got that far
	// is closed. Default 15 s.
	ConnectTimeout time.Duration
	// DisconnectedTimeout and FailedTimeout are the ICE timeouts (see
	// signaling.APIOptions): a peer silent for their sum is dead, and its
	// connection ends with close code 4002. Defaults 5 s and 10 s.
	DisconnectedTimeout, FailedTimeout time.Duration
	// WriteTimeout bounds how long the writer waits for a channel's
	// buffered amount to fall; a peer that reads nothing for that long
	// loses its connection (its session can resume). Default 10 s.
	WriteTimeout time.Duration
	// MaxFrameBytes is the size at which the writer stops adding messages
	// to one DataChannel message, and the size of the pieces a larger
	// message is split into. At most 64 KiB. Default 64 KiB.
	MaxFrameBytes int
	// MaxBufferedBytes is the high-water mark of a channel's buffered
	// amount: above it the writer waits (OnBufferedAmountLow, threshold a
	// quarter of it) before pulling more from the session. Default 1 MiB.
	MaxBufferedBytes int
	// MaxPending bounds negotiations that have not reached hello yet.
	// Default 1024.
	MaxPending int
	// Logger receives connection errors. Default: discard.
	Logger *slog.Logger
}

// Handler serves roomwire over WebRTC DataChannels, with the server as the
// client's peer. It answers two HTTP endpoints (see ServeHTTP) and owns the
// PeerConnections they create. Create it with NewHandler.
type Handler struct {
	reg     *outbox.Registry
	opts    Options
	ep      *httpsession.Endpoints
	api     *webrtc.API
	mux     ice.UDPMux
	ownMux  bool
	log     *slog.Logger
	conns   sync.WaitGroup
	pending int // under mu

	mu     sync.Mutex
	live   map[string]*conn // by negotiation id
	closed bool
}

// NewHandler returns a DataChannel transport for the sessions of reg. It
// fails if the UDP socket cannot be opened or an option is invalid.
func NewHandler(reg *outbox.Registry, opts *Options) (*Handler, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 64 << 10
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = 64 << 10
	}
	if o.UDPAddr == "" {
		o.UDPAddr = ":0"
	}
	if o.AllowRemoteIP == nil {
		o.AllowRemoteIP = signaling.PublicOnly
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 15 * time.Second
	}
	if o.DisconnectedTimeout <= 0 {
		o.DisconnectedTimeout = signaling.DefaultDisconnectedTimeout
	}
	if o.FailedTimeout <= 0 {
		o.FailedTimeout = signaling.DefaultFailedTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxFrameBytes <= 0 || o.MaxFrameBytes > 64<<10 {
		o.MaxFrameBytes = 64 << 10
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = 1 << 20
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1024
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &Handler{
		reg:  reg,
		opts: o,
		ep: httpsession.New(reg, httpsession.Options{
			Transport:       "rtcdc",
			AllowedOrigins:  o.AllowedOrigins,
			MaxMessageBytes: o.MaxRequestBytes,
		}),
		mux:  o.UDPMux,
		log:  o.Logger,
		live: map[string]*conn{},
	}
	loopback := false
	if h.mux == nil {
		host, _, _ := net.SplitHostPort(o.UDPAddr)
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			loopback = true
		}
		m, err := signaling.ListenUDP(o.UDPAddr)
		if err != nil {
			return nil, fmt.Errorf("rtcdc: %w", err)
		}
		h.mux, h.ownMux = m, true
	} else {
		for _, a := range h.mux.GetListenAddresses() {
			if ua, ok := a.(*net.UDPAddr); ok && ua.IP.IsLoopback() {
				loopback = true
			}
		}
	}
	api, err := signaling.NewAPI(&signaling.APIOptions{
		UDPMux:              h.mux,
		NAT1To1IPs:          o.NAT1To1IPs,
		AllowRemoteIP:       o.AllowRemoteIP,
		IncludeLoopback:     loopback,
		DisconnectedTimeout: o.DisconnectedTimeout,
		FailedTimeout:       o.FailedTimeout,
		MaxMessageBytes:     int(o.MaxMessageBytes),
	})
	if err != nil {
		if h.ownMux {
			h.mux.Close()
		}
		return nil, fmt.Errorf("rtcdc: %w", err)
	}
	h.api = api
	return h, nil
}

// LocalAddrs returns the addresses of the handler's UDP sockets.
func (h *Handler) LocalAddrs() []net.Addr { return h.mux.GetListenAddresses() }

// Len returns the number of PeerConnections the handler holds.
func (h *Handler) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.live)
}

// ServeHTTP routes on the last element of the request path:
//
//	POST .../offer      {"type":"offer","sdp":...} → {"id":...,"type":"answer","sdp":...}
//	POST .../candidate  {"id":...,"candidates":[RTCIceCandidateInit...]} → 204
//
// See docs/protocol-webrtc.md.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var serve func(http.ResponseWriter, *http.Request)
	switch path.Base(r.URL.Path) {
	case "offer":
		serve = h.offer
	case "candidate":
		serve = h.candidate
	default:
		http.NotFound(w, r)
		return
	}
	if !h.ep.Guard(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpsession.WriteError(w, http.StatusMethodNotAllowed, room.CodeBadRequest, "method not allowed")
		return
	}
	serve(w, r)
}

// Answer is the reply to an offer: the negotiation id (a secret that
// authorises the candidate requests of this negotiation) and the answer,
// which carries every server candidate.
type Answer struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// CandidateRequest is the body of a candidate request. A candidate whose
// "candidate" string is empty marks the end of the client's candidates.
type CandidateRequest struct {
	ID         string                    `json:"id"`
	Candidates []webrtc.ICECandidateInit `json:"candidates"`
}

// maxCandidates bounds the remote candidates of one negotiation.
const maxCandidates = 64

// gatherTimeout bounds the gathering of the server's candidates. With a UDP
// mux and no STUN, gathering is immediate.
const gatherTimeout = 5 * time.Second

func (h *Handler) offer(w http.ResponseWriter, r *http.Request) {
	var user json.RawMessage
	if h.opts.Authenticate != nil {
		var err error
		if user, err = h.opts.Authenticate(r); err != nil {
			httpsession.WriteError(w, http.StatusUnauthorized, "unauthorized", "unauthorized")
			return
		}
	}
	body, ok := httpsession.ReadBody(w, r, h.opts.MaxRequestBytes)
	if !ok {
		return
	}
	var desc webrtc.SessionDescription
	if err := json.Unmarshal(body, &desc); err != nil || desc.Type != webrtc.SDPTypeOffer || desc.SDP == "" {
		httpsession.WriteError(w, http.StatusBadRequest, room.CodeBadRequest, `the body must be {"type":"offer","sdp":...}`)
		return
	}
	c, err := h.admit(user)
	if err != nil {
		httpsession.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	answer, err := c.negotiate(r.Context(), desc)
	if err != nil {
		h.log.Debug("rtcdc negotiation", "err", err)
		c.abandon()
		httpsession.WriteError(w, http.StatusBadRequest, room.CodeBadRequest, "negotiation failed: "+err.Error())
		return
	}
	go c.run()
	b, _ := json.Marshal(Answer{ID: c.id, Type: "answer", SDP: answer})
	httpsession.WriteJSON(w, b)
}

// admit registers a new connection with its PeerConnection, or refuses it
// when the handler is closed or too many negotiations are pending.
func (h *Handler) admit(user json.RawMessage) (*conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("server shutting down")
	}
	if h.pending >= h.opts.MaxPending {
		return nil, errors.New("too many negotiations in progress")
	}
	pc, err := h.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("creating a PeerConnection: %w", err)
	}
	c := newConn(h, randomID(), pc, user)
	h.live[c.id] = c
	h.pending++
	h.conns.Add(1)
	return c, nil
}

// forget drops c once its goroutine ends (or its negotiation failed).
func (h *Handler) forget(c *conn, wasPending bool) {
	h.mu.Lock()
	delete(h.live, c.id)
	if wasPending {
		h.pending--
	}
	h.mu.Unlock()
	h.conns.Done()
}

func (h *Handler) donePending() {
	h.mu.Lock()
	h.pending--
	h.mu.Unlock()
}

func (h *Handler) candidate(w http.ResponseWriter, r *http.Request) {
	body, ok := httpsession.ReadBody(w, r, h.opts.MaxRequestBytes)
	if !ok {
		return
	}
	var req CandidateRequest
	if err := json.Unmarshal(body, &req); err != nil || req.ID == "" {
		httpsession.WriteError(w, http.StatusBadRequest, room.CodeBadRequest, `the body must be {"id":...,"candidates":[...]}`)
		return
	}
	h.mu.Lock()
	c := h.live[req.ID]
	h.mu.Unlock()
	if c == nil {
		httpsession.WriteError(w, http.StatusNotFound, "unknown_negotiation", "no such negotiation (ended, or never started)")
		return
	}
	if err := c.addCandidates(req.Candidates); err != nil {
		httpsession.WriteError(w, http.StatusBadRequest, room.CodeBadRequest, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Shutdown closes every connection still open (sessions closed by the hub
// have already told theirs), waits for their goroutines and
// PeerConnections, or for ctx, and closes the UDP socket the handler
// opened.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	for _, c := range h.live {
		c.close(room.ReasonShutdown)
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.conns.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if h.ownMux {
		h.mux.Close()
	}
	return err
}

func randomID() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
