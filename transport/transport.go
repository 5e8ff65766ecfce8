package transport

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport/outbox"
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
	// Logger receives transport errors. Default: discard.
	Logger *slog.Logger
}

// Server mounts every transport of one hub under one http.Handler:
//
//	GET  /ws   WebSocket
//
// Mount it under a prefix with http.StripPrefix, e.g. "/rt". It is safe for
// concurrent use.
type Server struct {
	reg *outbox.Registry
	ws  *ws.Handler
	mux *http.ServeMux
}

// New returns the transports for hub.
func New(hub *room.Hub, opts *Options) *Server {
	var o Options
	if opts != nil {
		o = *opts
	}
	reg := outbox.NewRegistry(hub, &outbox.Options{ResumeWindow: o.ResumeWindow, MaxQueueBytes: o.MaxQueueBytes})
	wo := o.WS
	if wo.AllowedOrigins == nil {
		wo.AllowedOrigins = o.AllowedOrigins
	}
	if wo.Authenticate == nil {
		wo.Authenticate = o.Authenticate
	}
	if wo.MaxMessageBytes == 0 {
		wo.MaxMessageBytes = o.MaxMessageBytes
	}
	if wo.Logger == nil {
		wo.Logger = o.Logger
	}
	s := &Server{reg: reg, ws: ws.NewHandler(reg, &wo), mux: http.NewServeMux()}
	s.mux.Handle("GET /ws", s.ws)
	return s
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
	return s.ws.Shutdown(ctx)
}
