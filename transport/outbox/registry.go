package outbox

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/roomwire/roomwire/room"
)

// Options configures a Registry. Zero fields mean the defaults.
type Options struct {
	// ResumeWindow is how long a session outlives its last connection:
	// a client that reconnects within it resumes with no loss, and other
	// members see it leave only once it has passed. Default 30 s.
	ResumeWindow time.Duration
	// MaxQueueBytes bounds a session's unacknowledged durable messages
	// plus its waiting ephemeral values. A session over it is closed with
	// room.ReasonSlowConsumer. Default 4 MiB; it must exceed the hub's
	// largest document, which a join reply carries.
	MaxQueueBytes int
	// Directory, if set, is told when a session opens (before its id is
	// handed to the client) and when it ends: a cluster's record of which
	// node owns which session (see transport/route). Default: none.
	Directory Directory
}

// Directory records the sessions a registry owns.
type Directory interface {
	Opened(sid string)
	Ended(sid string)
}

// Registry holds the live sessions of one hub, for every transport: it
// opens them, finds them again for resume by id and secret token, and
// forgets them when they end. Safe for concurrent use.
type Registry struct {
	hub  *room.Hub
	opts Options

	mu sync.Mutex
	m  map[string]*Session
	// Sessions that ended recently, so that a client arriving after the
	// end (an HTTP poll, a ticket request) can be told why: see Ended.
	ended     map[string]tombstone
	endedFIFO []string // sids in ending order
}

// tombstone is what remains of an ended session: enough to tell its
// client, and only its client, why it ended.
type tombstone struct {
	token  string
	reason room.CloseReason
	at     time.Time
}

// MaxTombstones bounds how many ended sessions a Registry remembers for
// Ended; the oldest are forgotten first.
const MaxTombstones = 4096

// NewRegistry returns a registry for hub.
func NewRegistry(hub *room.Hub, opts *Options) *Registry {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.ResumeWindow <= 0 {
		o.ResumeWindow = 30 * time.Second
	}
	if o.MaxQueueBytes <= 0 {
		o.MaxQueueBytes = 4 << 20
	}
	return &Registry{hub: hub, opts: o, m: map[string]*Session{}, ended: map[string]tombstone{}}
}

// Hub returns the registry's hub.
func (r *Registry) Hub() *room.Hub { return r.hub }

// Len returns the number of live sessions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Welcome is the outcome of a hello.
type Welcome struct {
	Session *Session
	// Resumed is true when the hello continued an earlier session; the
	// connection's writer then starts after Ack.
	Resumed bool
	Ack     uint64
	// Gen is the attachment's generation, for Detach (HelloAttach only).
	Gen uint64
	// Body is the welcome message, to be written first on the connection.
	Body []byte
}

type welcomeMsg struct {
	Type    string `json:"t"`
	SID     string `json:"sid"`
	Token   string `json:"token"`
	Resumed bool   `json:"resumed"`
	Window  int64  `json:"window"` // resume window, milliseconds
}

// MaxUserBytes bounds the user info a session carries.
const MaxUserBytes = 4096

// Hello handles a connection's first message e: it resumes the session
// e.Resume names when its token matches, or else opens a new one. A resume
// that fails (unknown session, wrong token, window passed) is not an error:
// the client gets a new session (resumed false) and rejoins its rooms.
// user, when non-nil, overrides the user info in e (an auth hook's result).
func (r *Registry) Hello(e *room.Envelope, transport string, user json.RawMessage) (Welcome, error) {
	return r.hello(e, transport, user, nil)
}

// HelloAttach is Hello for a connection that is already there to carry the
// session (WebSocket, DataChannel): the session is attached to it (see
// Session.Attach) before HelloAttach returns, so it cannot expire between
// the hello and the attach. The attachment's generation is in Welcome.Gen.
func (r *Registry) HelloAttach(e *room.Envelope, transport string, user json.RawMessage, closeFn func(room.CloseReason)) (Welcome, error) {
	return r.hello(e, transport, user, closeFn)
}

func (r *Registry) hello(e *room.Envelope, transport string, user json.RawMessage, closeFn func(room.CloseReason)) (Welcome, error) {
	if e.Type != room.TypeHello {
		return Welcome{}, fmt.Errorf("%w: the first message must be hello, not %q", room.ErrBadRequest, e.Type)
	}
	if user == nil {
		user = e.User
	}
	if len(user) > MaxUserBytes {
		return Welcome{}, fmt.Errorf("%w: user info over %d bytes", room.ErrTooLarge, MaxUserBytes)
	}
	if len(user) > 0 && (user[0] != '{' || !json.Valid(user)) {
		return Welcome{}, fmt.Errorf("%w: user must be a JSON object", room.ErrBadRequest)
	}
	var w Welcome
	if e.Resume != nil {
		if s := r.lookup(e.Resume.SID, e.Resume.Token); s != nil {
			ack := min(e.Resume.Ack, s.Last())
			s.Ack(ack)
			w = Welcome{Session: s, Resumed: true, Ack: ack}
			if closeFn != nil {
				gen, ok := s.Attach(transport, closeFn)
				if !ok { // it ended meanwhile: a new session instead
					w = Welcome{}
				}
				w.Gen = gen
			}
		}
	}
	if w.Session == nil {
		s, err := r.open(transport, user, closeFn)
		if err != nil {
			return Welcome{}, err
		}
		w.Session, w.Gen = s, s.gen
	}
	w.Body, _ = json.Marshal(welcomeMsg{
		Type:    room.TypeWelcome,
		SID:     w.Session.id,
		Token:   w.Session.token,
		Resumed: w.Resumed,
		Window:  r.opts.ResumeWindow.Milliseconds(),
	})
	return w, nil
}

func (r *Registry) open(transport string, user json.RawMessage, closeFn func(room.CloseReason)) (*Session, error) {
	s := &Session{
		id:        randomID(12),
		token:     randomID(24),
		reg:       r,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		transport: transport,
		eph:       map[string]*room.Message{},
	}
	// A new session starts attached to closeFn's connection, or else
	// detached with its resume window running, so that one whose client
	// never comes back still ends.
	s.mu.Lock()
	if closeFn != nil {
		s.gen = 1
		s.conn = &attachment{gen: 1, close: closeFn}
	} else {
		s.expiry = time.AfterFunc(r.opts.ResumeWindow, func() { s.expire(0) })
	}
	s.mu.Unlock()
	r.mu.Lock()
	r.m[s.id] = s
	r.mu.Unlock()
	if d := r.opts.Directory; d != nil {
		d.Opened(s.id)
	}
	if err := r.hub.Connect(s, user); err != nil {
		if d := r.opts.Directory; d != nil {
			d.Ended(s.id)
		}
		s.mu.Lock()
		if s.expiry != nil {
			s.expiry.Stop()
		}
		s.mu.Unlock()
		r.forget(s)
		return nil, err
	}
	return s, nil
}

// Lookup returns the live session sid if token is its secret token, else nil.
func (r *Registry) Lookup(sid, token string) *Session { return r.lookup(sid, token) }

func (r *Registry) lookup(sid, token string) *Session {
	r.mu.Lock()
	s := r.m[sid]
	r.mu.Unlock()
	if s == nil || subtle.ConstantTimeCompare([]byte(s.token), []byte(token)) != 1 {
		return nil
	}
	return s
}

// Ended reports why session sid ended, if it ended no longer than the
// resume window ago (and among the last MaxTombstones to end) and token is
// its secret token. Transports whose client is not connected when its
// session ends (long-polling between polls, SSE between streams) use it to
// deliver the close reason late.
func (r *Registry) Ended(sid, token string) (room.CloseReason, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trimEnded(time.Now())
	t, ok := r.ended[sid]
	if !ok || subtle.ConstantTimeCompare([]byte(t.token), []byte(token)) != 1 {
		return room.CloseReason{}, false
	}
	return t.reason, true
}

// bury records that s ended with reason, for Ended.
func (r *Registry) bury(s *Session, reason room.CloseReason) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trimEnded(now)
	if len(r.endedFIFO) >= MaxTombstones {
		delete(r.ended, r.endedFIFO[0])
		r.endedFIFO[0] = ""
		r.endedFIFO = r.endedFIFO[1:]
	}
	r.ended[s.id] = tombstone{token: s.token, reason: reason, at: now}
	r.endedFIFO = append(r.endedFIFO, s.id)
}

// trimEnded forgets tombstones older than the resume window. Called with
// mu held.
func (r *Registry) trimEnded(now time.Time) {
	cut := now.Add(-r.opts.ResumeWindow)
	for len(r.endedFIFO) > 0 && r.ended[r.endedFIFO[0]].at.Before(cut) {
		delete(r.ended, r.endedFIFO[0])
		r.endedFIFO[0] = ""
		r.endedFIFO = r.endedFIFO[1:]
	}
	if len(r.endedFIFO) == 0 {
		r.endedFIFO = nil // release the backing array
	}
}

func (r *Registry) forget(s *Session) {
	r.mu.Lock()
	if r.m[s.id] == s {
		delete(r.m, s.id)
	}
	r.mu.Unlock()
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics rather)
	return base64.RawURLEncoding.EncodeToString(b)
}
