// Package redisroute is a route.Router over Redis: the session directory is
// one key per session, and nodes exchange forwarded requests and their
// answers over Redis pub/sub, one channel per node.
//
// Keys and channels (prefix "rw" by default):
//
//	rw:sess:<sid>    string: the owner node's id; expires after TTL unless the
//	                 owner refreshes it (every TTL/3 while the session lives);
//	                 when the session ends it is kept for Linger only
//	rw:route:<node>  pub/sub channel: requests and cancels for the node, and
//	                 the frames of answers to requests the node forwarded
//
// A message is a JSON envelope {k, id, from, req | frame}. Answers are
// published by the owner's handler goroutine one after another, so they
// arrive in order. PUBLISH reports how many subscribers received a message:
// 0 means the addressed node is gone, and the request or answer fails at
// once instead of waiting.
package redisroute

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomwire/roomwire/transport/route"
)

// Options configures a Router. Zero fields mean the defaults.
type Options struct {
	// Node is this node's id. Default: random. Use the broker's
	// (redisbroker.Broker.Node) to have one name per node.
	Node string
	// Prefix starts every key and channel. Default "rw".
	Prefix string
	// TTL is how long a session's directory record outlives its owner's
	// last refresh (the owner refreshes every TTL/3). Default 30 s.
	TTL time.Duration
	// Linger is how long an ended session's record still points to its
	// owner, which tells late requests why the session ended; set it to
	// the transports' resume window. Default 30 s.
	Linger time.Duration
	// IdleTimeout is how long Forward waits for the next frame of an
	// answer before it gives the owner up. It must exceed the SSE
	// keep-alive interval and the long-poll hold. Default 60 s.
	IdleTimeout time.Duration
	// Logger receives Redis errors. Default: discard.
	Logger *slog.Logger
}

// Router implements route.Router. Create it with New, close it with Close
// after the transports have shut down and before the Redis client closes.
type Router struct {
	c    *redis.Client
	o    Options
	self string
	ch   string // this node's channel
	ps   *redis.PubSub
	log  *slog.Logger

	ctx  context.Context // ends on Close
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	live    map[string]struct{}           // sessions owned here
	calls   map[string]*call              // forwards in flight, by id
	served  map[string]context.CancelFunc // forwarded requests being served, by from+"/"+id
	handler route.Handler
}

var _ route.Router = (*Router)(nil)

// envelope kinds
const (
	kReq    = "req"
	kCancel = "cancel"
	kFrame  = "frame"
	kEnd    = "end"
)

type envelope struct {
	K     string         `json:"k"`
	ID    string         `json:"id"`
	From  string         `json:"from,omitempty"`
	Req   *route.Request `json:"req,omitempty"`
	Frame *route.Frame   `json:"frame,omitempty"`
}

type call struct {
	mu   sync.Mutex
	q    []envelope
	wake chan struct{}
}

// New subscribes to this node's channel and returns the router. c is a
// client the router shares (e.g. redisbroker.Broker.Client); it does not
// close it.
func New(ctx context.Context, c *redis.Client, opts *Options) (*Router, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Node == "" {
		o.Node = randomID(9)
	}
	if o.Prefix == "" {
		o.Prefix = "rw"
	}
	if o.TTL <= 0 {
		o.TTL = 30 * time.Second
	}
	if o.Linger <= 0 {
		o.Linger = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Router{
		c:      c,
		o:      o,
		self:   o.Node,
		ch:     o.Prefix + ":route:" + o.Node,
		log:    o.Logger,
		live:   map[string]struct{}{},
		calls:  map[string]*call{},
		served: map[string]context.CancelFunc{},
	}
	r.ps = c.Subscribe(ctx, r.ch)
	// Wait for the subscription: a request published to this node from
	// now on reaches it.
	if _, err := r.ps.Receive(ctx); err != nil {
		r.ps.Close()
		return nil, err
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	msgs := r.ps.Channel(redis.WithChannelSize(4096))
	r.wg.Add(2)
	go r.read(msgs)
	go r.refresh()
	return r, nil
}

// Close stops serving forwarded requests (their handlers' contexts end),
// fails the forwards in flight, and waits for its goroutines. Idempotent.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.stop()
	err := r.ps.Close()
	r.wg.Wait()
	return err
}

// Self implements route.Router.
func (r *Router) Self() string { return r.self }

func (r *Router) key(sid string) string { return r.o.Prefix + ":sess:" + sid }

// Opened implements route.Router: the record is written before it returns.
func (r *Router) Opened(sid string) {
	r.mu.Lock()
	r.live[sid] = struct{}{}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	if err := r.c.Set(ctx, r.key(sid), r.self, r.o.TTL).Err(); err != nil {
		r.log.Warn("session directory: recording a session", "sid", sid, "err", err)
	}
}

// Ended implements route.Router: the record now expires after Linger.
func (r *Router) Ended(sid string) {
	r.mu.Lock()
	delete(r.live, sid)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	if err := r.c.Set(ctx, r.key(sid), r.self, r.o.Linger).Err(); err != nil && r.ctx.Err() == nil {
		r.log.Warn("session directory: recording an end", "sid", sid, "err", err)
	}
}

// Owner implements route.Router.
func (r *Router) Owner(ctx context.Context, sid string) (string, error) {
	n, err := r.c.Get(ctx, r.key(sid)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return n, err
}

// refresh keeps the records of live sessions from expiring.
func (r *Router) refresh() {
	defer r.wg.Done()
	t := time.NewTicker(r.o.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		sids := make([]string, 0, len(r.live))
		for sid := range r.live {
			sids = append(sids, sid)
		}
		r.mu.Unlock()
		if len(sids) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.o.TTL/3)
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, sid := range sids {
				p.Set(ctx, r.key(sid), r.self, r.o.TTL)
			}
			return nil
		})
		cancel()
		if err != nil && r.ctx.Err() == nil {
			r.log.Warn("session directory: refresh", "err", err)
		}
	}
}

// Serve implements route.Router.
func (r *Router) Serve(h route.Handler) {
	r.mu.Lock()
	r.handler = h
	r.mu.Unlock()
}

// publish sends e to node's channel; ErrUnreachable when nobody listens.
func (r *Router) publish(ctx context.Context, node string, e *envelope) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	n, err := r.c.Publish(ctx, r.o.Prefix+":route:"+node, b).Result()
	if err != nil {
		return err
	}
	if n == 0 {
		return route.ErrUnreachable
	}
	return nil
}

// read dispatches what arrives on this node's channel.
func (r *Router) read(msgs <-chan *redis.Message) {
	defer r.wg.Done()
	for m := range msgs {
		var e envelope
		if err := json.Unmarshal([]byte(m.Payload), &e); err != nil {
			r.log.Warn("route: bad message", "err", err)
			continue
		}
		switch e.K {
		case kReq:
			r.serve(e)
		case kCancel:
			r.mu.Lock()
			cancel := r.served[e.From+"/"+e.ID]
			r.mu.Unlock()
			if cancel != nil {
				cancel()
			}
		case kFrame, kEnd:
			r.mu.Lock()
			c := r.calls[e.ID]
			r.mu.Unlock()
			if c == nil {
				continue // the forward has given up
			}
			c.mu.Lock()
			c.q = append(c.q, e)
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}
}

// serve runs a forwarded request's handler on its own goroutine.
func (r *Router) serve(e envelope) {
	if e.Req == nil {
		return
	}
	key := e.From + "/" + e.ID
	ctx, cancel := context.WithCancel(r.ctx)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		return
	}
	h := r.handler
	r.served[key] = cancel
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.served, key)
			r.mu.Unlock()
			cancel()
		}()
		send := func(f route.Frame) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.publish(ctx, e.From, &envelope{K: kFrame, ID: e.ID, Frame: &f})
		}
		if h == nil {
			send(route.Frame{Status: http.StatusServiceUnavailable})
		} else {
			h(ctx, e.Req, send)
		}
		if ctx.Err() == nil {
			r.publish(ctx, e.From, &envelope{K: kEnd, ID: e.ID})
		}
	}()
}

// Forward implements route.Router.
func (r *Router) Forward(ctx context.Context, node string, req *route.Request, out func(route.Frame) error) error {
	id := randomID(12)
	c := &call{wake: make(chan struct{}, 1)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return route.ErrUnreachable
	}
	r.calls[id] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.calls, id)
		r.mu.Unlock()
	}()
	if err := r.publish(ctx, node, &envelope{K: kReq, ID: id, From: r.self, Req: req}); err != nil {
		return err
	}
	cancel := func() {
		cctx, done := context.WithTimeout(r.ctx, 2*time.Second)
		defer done()
		r.publish(cctx, node, &envelope{K: kCancel, ID: id, From: r.self})
	}
	idle := time.NewTimer(r.o.IdleTimeout)
	defer idle.Stop()
	var q []envelope
	for {
		select {
		case <-ctx.Done():
			cancel()
			return ctx.Err()
		case <-r.ctx.Done():
			return route.ErrUnreachable
		case <-idle.C:
			cancel()
			return route.ErrUnreachable
		case <-c.wake:
		}
		c.mu.Lock()
		q, c.q = c.q, q[:0]
		c.mu.Unlock()
		for _, e := range q {
			if e.K == kEnd {
				return nil
			}
			if e.Frame == nil {
				continue
			}
			if err := out(*e.Frame); err != nil {
				cancel()
				return err
			}
		}
		idle.Reset(r.o.IdleTimeout)
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
