package transport

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/longpoll"
	"github.com/roomwire/roomwire/transport/outbox"
	"github.com/roomwire/roomwire/transport/route"
	"github.com/roomwire/roomwire/transport/rtcdc"
	"github.com/roomwire/roomwire/transport/sse"
	"github.com/roomwire/roomwire/transport/ws"
)

// Options configures every transport at once. Zero fields mean the
// defaults each field's documentation names.
type Options struct {
	// ResumeWindow and MaxQueueBytes: see outbox.Options.
	ResumeWindow  time.Duration
	MaxQueueBytes int
	// AllowedOrigins lists cross-site origins allowed in (see origin.New).
	// Default: same-origin and non-browser clients only.
	AllowedOrigins []string
	// Authenticate, if set, runs on every connecting request; an error
	// refuses it with 401, the result is the user info others see.
	Authenticate func(*http.Request) (user json.RawMessage, err error)
	// MaxMessageBytes is the largest client message. Default 64 KiB.
	MaxMessageBytes int64
	// WS holds WebSocket-only settings; its origin, auth and size fields
	// are filled from the fields above when zero.
	WS ws.Options
	// SSE and LongPoll hold the settings of those transports; their
	// origin, auth, size and logger fields are filled from the fields
	// above when zero.
	SSE      sse.Options
	LongPoll longpoll.Options
	// Logger receives transport errors. Default: discard.
	Logger *slog.Logger
	// Router, if set, makes the HTTP transports' sessions reachable from
	// every node of a cluster: sessions opened here are recorded in its
	// directory, and a send, ticket, close, poll or event stream request
	// for a session another node owns is forwarded to that node, which
	// serves it and streams the answer back (see transport/route and
	// docs/scaling.md). Default: nil, every session is local.
	Router route.Router
}

// Server mounts every transport of one hub under one http.Handler:
//
//	GET  /ws                WebSocket
//	POST /sse/hello         SSE: open or resume a session (welcome + ticket)
//	POST /sse/ticket        SSE: a ticket for the next stream
//	GET  /sse/events        SSE: the event stream (?ticket=...)
//	POST /sse/send          send messages (either HTTP transport)
//	POST /sse/close         end the session
//	POST /longpoll/hello    long-polling: open or resume a session
//	POST /longpoll/poll     long-polling: acknowledge and wait for messages
//	POST /longpoll/send     send messages (same as /sse/send)
//	POST /longpoll/close    end the session
//
// Every transport shares one session registry, so a session begun on one
// resumes on any other. See docs/protocol-http.md.
//
// Mount it under a prefix with http.StripPrefix, e.g. "/rt". It is safe for
// concurrent use.
type Server struct {
	opts Options // as given to New, for EnableRTC
	reg  *outbox.Registry
	ws   *ws.Handler
	sse  *sse.Handler
	lp   *longpoll.Handler
	mux  *http.ServeMux

	router    route.Router    // nil: every session is local
	bodyLimit int64           // the largest body a forwarded request carries
	fwdCtx    context.Context // ends on Shutdown: forwards in flight stop
	fwdStop   context.CancelFunc
	fwdMu     sync.Mutex
	fwdClosed bool
	fwdWG     sync.WaitGroup

	rtcMu sync.Mutex
	rtc   *rtcdc.Handler // nil until EnableRTC
}

// New returns the transports for hub.
func New(hub *room.Hub, opts *Options) *Server {
	var o Options
	if opts != nil {
		o = *opts
	}
	oo := &outbox.Options{ResumeWindow: o.ResumeWindow, MaxQueueBytes: o.MaxQueueBytes}
	if o.Router != nil {
		oo.Directory = o.Router
	}
	reg := outbox.NewRegistry(hub, oo)
	wo, so, lo := o.WS, o.SSE, o.LongPoll
	if o.Router != nil && so.TicketPrefix == "" {
		so.TicketPrefix = o.Router.Self() + "."
	}
	o.fill(&wo.AllowedOrigins, &wo.Authenticate, &wo.MaxMessageBytes, &wo.Logger)
	o.fill(&so.AllowedOrigins, &so.Authenticate, &so.MaxMessageBytes, &so.Logger)
	o.fill(&lo.AllowedOrigins, &lo.Authenticate, &lo.MaxMessageBytes, &lo.Logger)
	s := &Server{
		opts: o,
		reg:  reg,
		ws:   ws.NewHandler(reg, &wo),
		sse:  sse.NewHandler(reg, &so),
		lp:   longpoll.NewHandler(reg, &lo),
		mux:  http.NewServeMux(),
	}
	s.mux.Handle("GET /ws", s.ws)
	s.mux.Handle("/sse/", s.sse)
	s.mux.Handle("/longpoll/", s.lp)
	if o.Router != nil {
		s.router = o.Router
		s.fwdCtx, s.fwdStop = context.WithCancel(context.Background())
		s.bodyLimit = max(so.MaxBodyBytes, lo.MaxBodyBytes, so.MaxMessageBytes, lo.MaxMessageBytes, 1<<20)
		o.Router.Serve(s.serveForwarded)
	}
	return s
}

// fill sets a transport's shared settings that are zero from o's.
func (o *Options) fill(origins *[]string, auth *func(*http.Request) (json.RawMessage, error), maxMsg *int64, log **slog.Logger) {
	if *origins == nil {
		*origins = o.AllowedOrigins
	}
	if *auth == nil {
		*auth = o.Authenticate
	}
	if *maxMsg == 0 {
		*maxMsg = o.MaxMessageBytes
	}
	if *log == nil {
		*log = o.Logger
	}
}

// Handler returns New(hub, opts) as an http.Handler.
func Handler(hub *room.Hub, opts *Options) http.Handler { return New(hub, opts) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.router != nil {
		if node := s.owner(r); node != "" {
			s.forward(w, r, node)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// Registry returns the session registry the transports share.
func (s *Server) Registry() *outbox.Registry { return s.reg }

// Router returns Options.Router (nil when every session is local).
func (s *Server) Router() route.Router { return s.router }

// Shutdown ends every connection still open and waits for the transports'
// goroutines, or for ctx. Call it after Hub.Shutdown, which has already told
// every session's client to reconnect; http.Server.Shutdown does not wait
// for hijacked connections, so this does.
func (s *Server) Shutdown(ctx context.Context) error {
	err := errors.Join(s.ws.Shutdown(ctx), s.sse.Shutdown(ctx), s.lp.Shutdown(ctx))
	if s.router != nil {
		err = errors.Join(err, s.shutdownForwards(ctx))
	}
	s.rtcMu.Lock()
	rtc := s.rtc
	s.rtcMu.Unlock()
	if rtc != nil {
		err = errors.Join(err, rtc.Shutdown(ctx))
	}
	return err
}

// EnableRTC mounts the WebRTC DataChannel transport (the server as the
// client's peer) over the same session registry:
//
//	POST /rtc/offer      SDP offer in, answer and negotiation id out
//	POST /rtc/candidate  the client's trickled ICE candidates
//
// See docs/protocol-webrtc.md. It is not mounted by New because it opens a
// UDP socket (opts.UDPAddr); it fails if that socket cannot be opened, or
// if called twice. Call it before serving. Origin, authentication and
// message-size fields of opts left zero are filled from New's options.
// Shutdown closes it.
func (s *Server) EnableRTC(opts *rtcdc.Options) (*rtcdc.Handler, error) {
	var o rtcdc.Options
	if opts != nil {
		o = *opts
	}
	s.opts.fill(&o.AllowedOrigins, &o.Authenticate, &o.MaxMessageBytes, &o.Logger)
	s.rtcMu.Lock()
	defer s.rtcMu.Unlock()
	if s.rtc != nil {
		return nil, errors.New("transport: the DataChannel transport is already mounted")
	}
	h, err := rtcdc.NewHandler(s.reg, &o)
	if err != nil {
		return nil, err
	}
	s.rtc = h
	s.mux.Handle("/rtc/", h)
	return h, nil
}
