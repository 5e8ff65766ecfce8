package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/roomwire/roomwire/transport/internal/httpsession"
	"github.com/roomwire/roomwire/transport/route"
)

// forwardedHeaders are the request headers the owner's handlers read.
var forwardedHeaders = []string{"Origin", "Content-Type", "Last-Event-ID", httpsession.HeaderSession, httpsession.HeaderToken}

// owner returns the node that owns the session r is about when that is
// another node, else "" (serve r here: its session is local, unknown, or
// r needs none).
func (s *Server) owner(r *http.Request) string {
	p := r.URL.Path
	if r.Method == http.MethodOptions || !(strings.HasPrefix(p, "/sse/") || strings.HasPrefix(p, "/longpoll/")) {
		return ""
	}
	switch path.Base(p) {
	case "events":
		// The ticket names its issuer: "<node>.<random>".
		t := r.URL.Query().Get("ticket")
		if i := strings.LastIndexByte(t, '.'); i > 0 && t[:i] != s.router.Self() {
			return t[:i]
		}
		return ""
	case "send", "close", "ticket", "poll":
	default:
		return ""
	}
	sid, token := r.Header.Get(httpsession.HeaderSession), r.Header.Get(httpsession.HeaderToken)
	if sid == "" || token == "" {
		return ""
	}
	if s.reg.Lookup(sid, token) != nil {
		return ""
	}
	if _, ok := s.reg.Ended(sid, token); ok {
		return ""
	}
	node, err := s.router.Owner(r.Context(), sid)
	if err != nil {
		s.warn("session directory lookup", "sid", sid, "err", err)
		return ""
	}
	if node == s.router.Self() {
		return ""
	}
	return node
}

// forward serves r by forwarding it to node, the owner of its session, and
// writing out the owner's answer: this goroutine stays the only writer of w.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, node string) {
	s.fwdMu.Lock()
	if s.fwdClosed {
		s.fwdMu.Unlock()
		httpsession.WriteError(w, http.StatusServiceUnavailable, "unavailable", "server shutting down")
		return
	}
	s.fwdWG.Add(1)
	s.fwdMu.Unlock()
	defer s.fwdWG.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.fwdCtx, cancel)()
	body, err := io.ReadAll(io.LimitReader(r.Body, s.bodyLimit+1)) // the owner enforces the limit
	if err != nil {
		httpsession.WriteError(w, http.StatusBadRequest, "bad_request", "reading the request body: "+err.Error())
		return
	}
	req := &route.Request{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Header: http.Header{}, Body: body}
	for _, k := range forwardedHeaders {
		if v := r.Header.Values(k); len(v) > 0 {
			req.Header[k] = v
		}
	}
	rc := http.NewResponseController(w)
	started := false
	err = s.router.Forward(ctx, node, req, func(f route.Frame) error {
		if !started {
			started = true
			h := w.Header()
			for k, v := range f.Header {
				h[k] = v
			}
			w.WriteHeader(cmp(f.Status, http.StatusOK))
		}
		if len(f.Data) > 0 {
			if err := rc.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
				return err
			}
			if _, err := w.Write(f.Data); err != nil {
				return err
			}
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	})
	switch {
	case err == nil || started || r.Context().Err() != nil:
	case errors.Is(err, route.ErrUnreachable):
		// The owner is gone, and its sessions with it: the client starts
		// over, as for any unknown session.
		httpsession.WriteError(w, http.StatusUnauthorized, "unauthorized", "unknown session or wrong token")
	case s.fwdCtx.Err() != nil:
		httpsession.WriteError(w, http.StatusServiceUnavailable, "unavailable", "server shutting down")
	default:
		s.warn("forwarding a request", "node", node, "err", err)
		httpsession.WriteError(w, http.StatusServiceUnavailable, "unavailable", "session owner unavailable")
	}
}

// shutdownForwards ends the forwarded requests in flight (their clients
// see the response end, as for a local stream at shutdown) and refuses new
// ones; it waits for them, or for ctx.
func (s *Server) shutdownForwards(ctx context.Context) error {
	s.fwdMu.Lock()
	s.fwdClosed = true
	s.fwdMu.Unlock()
	s.fwdStop()
	done := make(chan struct{})
	go func() { s.fwdWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) warn(msg string, args ...any) {
	if s.opts.Logger != nil {
		s.opts.Logger.Warn(msg, args...)
	}
}

func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// serveForwarded serves, on the owner, a request another node forwarded:
// exactly as if it had arrived here (the token is checked here).
func (s *Server) serveForwarded(ctx context.Context, req *route.Request, send func(route.Frame) error) {
	r, err := http.NewRequestWithContext(ctx, req.Method, "http://forwarded"+req.Path, bytes.NewReader(req.Body))
	if err != nil {
		send(route.Frame{Status: http.StatusBadRequest})
		return
	}
	r.Host = req.Host
	if req.Header != nil {
		r.Header = req.Header
	}
	r.RemoteAddr = "forwarded"
	fw := &forwardWriter{send: send, hdr: http.Header{}}
	s.mux.ServeHTTP(fw, r)
	fw.FlushError()
}

// forwardWriter is the owner's ResponseWriter for a forwarded request: the
// answer goes back in frames, one per flush (and one at the end).
type forwardWriter struct {
	send   func(route.Frame) error
	hdr    http.Header
	status int
	sent   bool // the status and header have gone
	buf    []byte
	err    error
}

func (fw *forwardWriter) Header() http.Header { return fw.hdr }

func (fw *forwardWriter) WriteHeader(code int) {
	if fw.status == 0 && code >= 200 {
		fw.status = code
	}
}

func (fw *forwardWriter) Write(b []byte) (int, error) {
	if fw.err != nil {
		return 0, fw.err
	}
	if fw.status == 0 {
		fw.status = http.StatusOK
	}
	fw.buf = append(fw.buf, b...)
	if len(fw.buf) >= 256<<10 {
		if err := fw.FlushError(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// FlushError sends what has been written (http.ResponseController.Flush).
func (fw *forwardWriter) FlushError() error {
	if fw.err != nil {
		return fw.err
	}
	if fw.sent && len(fw.buf) == 0 {
		return nil
	}
	f := route.Frame{Data: fw.buf}
	if !fw.sent {
		f.Status, f.Header = cmp(fw.status, http.StatusOK), fw.hdr.Clone()
		fw.sent = true
	}
	fw.err = fw.send(f)
	fw.buf = fw.buf[:0]
	return fw.err
}
