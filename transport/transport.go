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

	rtcMu sync.Mutex
	rtc   *rtcdc.Handler // nil until EnableRTC
}

// New returns the transports for hub.
func New(hub *room.Hub, opts *Options) *Server {
	var o Options
	if opts != nil {
		o = *opts
	}
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: o.ResumeWindow, MaxQueueBytes: o.MaxQueueBytes})
	wo, so, lo := o.WS, o.SSE, o.LongPoll
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
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Registry returns the session registry the transports share.
func (s *Server) Registry() *outbox.Registry { return s.reg }

// Shutdown ends every connection still open and waits for the transports'
// goroutines, or for ctx. Call it after Hub.Shutdown, which has already told
// every session's client to reconnect; http.Server.Shutdown does not wait
// for hijacked connections, so this does.
func (s *Server) Shutdown(ctx context.Context) error {
	err := errors.Join(s.ws.Shutdown(ctx), s.sse.Shutdown(ctx), s.lp.Shutdown(ctx))
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
