package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/roomwire/roomwire/room"
)

// The request headers that carry a session's credentials on the HTTP
// transports (docs/protocol-http.md): the secret never goes in a URL.
const (
	headerSession = "Roomwire-Session"
	headerToken   = "Roomwire-Token"
)

// maxHTTPBody bounds what the client reads from one HTTP answer (a poll
// answer is about 64 KiB, but a join reply carries a whole document).
const maxHTTPBody = 64 << 20

// httpClient is what the SSE and long-polling transports share: one
// net/http client with a connection pool of its own (so that closing it
// touches only this Client's connections), and the server's base URL.
type httpClient struct {
	base   string // http(s)://host/prefix, without a trailing slash
	header http.Header
	tr     *http.Transport
	hc     *http.Client
	keyPre string        // Idempotency-Key prefix
	keyN   atomic.Uint64 // Idempotency-Key counter
}

func newHTTPClient(base *url.URL, o *Options) *httpClient {
	u := *base
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.RawQuery, u.Fragment = "", ""
	dial := o.NetDialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: o.HandshakeTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dial,
		TLSClientConfig:     o.TLSConfig,
		TLSHandshakeTimeout: o.HandshakeTimeout,
		ForceAttemptHTTP2:   true,
		// No Accept-Encoding: gzip, so that no proxy is invited to
		// compress (and so buffer) the event stream.
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	var pre [6]byte
	rand.Read(pre[:])
	return &httpClient{
		base:   strings.TrimSuffix(u.String(), "/"),
		header: o.Header,
		tr:     tr,
		hc:     &http.Client{Transport: tr},
		keyPre: base64.RawURLEncoding.EncodeToString(pre[:]) + "-",
	}
}

func (h *httpClient) closeIdle() { h.tr.CloseIdleConnections() }

// creds are a session's credentials.
type creds struct{ sid, token string }

// request builds a request to endpoint (e.g. "sse/ticket"). An idempotent
// request (a poll, a ticket, a close) carries an Idempotency-Key header,
// which lets net/http send it again on a fresh connection when a kept-alive
// one turns out to have been closed by the server or a proxy, or broke
// before the answer came: a poll that is repeated repeats its ack and gets
// the same messages.
func (h *httpClient) request(ctx context.Context, method, endpoint string, body []byte, cr *creds, idempotent bool) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+"/"+endpoint, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range h.header {
		req.Header[k] = v
	}
	if cr != nil {
		req.Header.Set(headerSession, cr.sid)
		req.Header.Set(headerToken, cr.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	if idempotent {
		req.Header.Set("Idempotency-Key", h.keyPre+strconv.FormatUint(h.keyN.Add(1), 36))
	}
	return req, nil
}

// post sends body to endpoint and returns the answer's status and body.
func (h *httpClient) post(ctx context.Context, endpoint string, body []byte, cr *creds, idempotent bool) (int, []byte, error) {
	req, err := h.request(ctx, http.MethodPost, endpoint, body, cr, idempotent)
	if err != nil {
		return 0, nil, err
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return 0, nil, ctxErr(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody))
	if err != nil {
		return 0, nil, ctxErr(ctx, err)
	}
	return resp.StatusCode, b, nil
}

// hello posts a hello message to endpoint ("sse/hello", "longpoll/hello")
// and returns the welcome. A refusal is an *httpError that errors.Is
// ErrUnauthorized for 401 and 403 (the auth hook or the origin check), a
// terminal *CloseError 4100 for a hello the server finds bad (400, 413
// with the server's error body, as WebSocket closes with 4100), and a
// plain *httpError otherwise (404: no such transport; 502: a proxy; 503:
// shutting down), after which another transport may do better.
func (h *httpClient) hello(ctx context.Context, endpoint string, hello []byte) (*welcome, []byte, error) {
	status, body, err := h.post(ctx, endpoint, hello, nil, false)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case status == http.StatusOK:
	case (status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge) && isServerError(body):
		return nil, nil, &CloseError{Code: room.ReasonProtocol.Code, Text: errorText(body)}
	default:
		return nil, nil, &httpError{Status: status, err: fmt.Errorf("%s: %s", endpoint, errorText(body))}
	}
	var w welcome
	if err := json.Unmarshal(body, &w); err != nil || w.Type != room.TypeWelcome || w.SID == "" || w.Token == "" {
		return nil, nil, fmt.Errorf("client: %s: not a welcome: %.200q", endpoint, body)
	}
	return &w, body, nil
}

// sessionStatus turns the answer to a request about a session (send,
// poll, ticket) that was not a success into an error: the close message of
// a session that has ended (410), or a session the server does not know
// (401: past its window, or a different server), or another failure. None
// is terminal: the client reconnects, and its hello tells it where it
// stands.
func sessionStatus(endpoint string, status int, body []byte) error {
	switch status {
	case http.StatusGone:
		if m, err := parseMsg(body); err == nil && m.T == room.TypeClose {
			return m.closeError()
		}
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: %s: %s", errSessionUnknown, endpoint, errorText(body))
	}
	return &statusError{Endpoint: endpoint, Status: status, Body: errorText(body)}
}

// errSessionUnknown: the server answered 401 to a request about the
// session (it has ended and been forgotten, or this is another server).
var errSessionUnknown = errors.New("client: the server does not know the session")

// statusError is an HTTP answer the client did not expect. It is not
// terminal.
type statusError struct {
	Endpoint string
	Status   int
	Body     string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("client: %s: HTTP %d: %s", e.Endpoint, e.Status, e.Body)
}

// isServerError reports whether body is an error in roomwire's own shape,
// {"t":"error",...}, rather than a proxy's page.
func isServerError(body []byte) bool {
	m, err := parseMsg(body)
	return err == nil && m.T == room.TypeError
}

// errorText is what an error answer says: the msg of roomwire's error
// body, or the start of whatever else it is.
func errorText(body []byte) string {
	if m, err := parseMsg(body); err == nil && m.Msg != "" {
		return m.code() + ": " + m.Msg
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// connState is what the HTTP connections (sseConn, lpConn) share: a
// lifetime that close ends, which every request of the connection runs
// in, and the first reason it failed.
type connState struct {
	ctx    context.Context
	cancel context.CancelFunc
	err    atomic.Pointer[error]
}

func newConnState() connState {
	ctx, cancel := context.WithCancel(context.Background())
	return connState{ctx: ctx, cancel: cancel}
}

// fail records why the connection ends, if it is the first reason, and
// ends it.
func (s *connState) fail(err error) {
	s.err.CompareAndSwap(nil, &err)
	s.cancel()
}

// failure is the error to report for err, a request that failed: the
// recorded reason if there is one, else a broken connection (1006).
func (s *connState) failure(err error) error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	if s.ctx.Err() != nil {
		return &CloseError{Code: 1006, Text: "connection closed"}
	}
	return errors.Join(&CloseError{Code: 1006, Text: "connection lost"}, err)
}

// sessionError is a dial that failed after the server had welcomed the
// client, so that the session it opened or resumed exists: the next
// attempt resumes it rather than open another.
type sessionError struct {
	w   welcome
	err error
}

func (e *sessionError) Error() string { return e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

func (t *sseTransport) closeIdle() { t.hc.closeIdle() }
func (t *lpTransport) closeIdle()  { t.hc.closeIdle() }
