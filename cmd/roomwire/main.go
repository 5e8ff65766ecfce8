// Command roomwire is the ready-made roomwire server: the realtime endpoints
// under /rt/, the demo page at /, and a health check at /healthz.
//
//	go run ./cmd/roomwire                 # http://localhost:8080
//	go run ./cmd/roomwire -addr 127.0.0.1:9000 -allow-origin https://app.example.com
//
// SIGINT or SIGTERM shut it down gracefully: clients are told to reconnect
// (close code 4000), then the transports and the HTTP server stop, all
// within -shutdown-timeout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/redis/go-redis/v9"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/boltstore"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/signaling"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/redisroute"
	"github.com/roomwire/roomwire/transport/route"
	"github.com/roomwire/roomwire/transport/rtcdc"
	"github.com/roomwire/roomwire/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "roomwire:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	addr            string
	origins         []string
	resumeWindow    time.Duration
	shutdownTimeout time.Duration
	realIP          bool
	logLevel        slog.Level
	rtcUDP          string
	rtcPrivate      bool
	dataDir         string
	redisURL        string
}

// parseFlags reads args into a config; usage and flag errors go to out.
func parseFlags(args []string, out io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("roomwire", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.addr, "addr", ":8080", "address to listen on (host:port; port 0 picks a free one)")
	fs.Func("allow-origin", "a cross-site `origin` allowed to connect, such as https://app.example.com or https://*.example.com;\nrepeat the flag or separate origins with commas (default: same-origin only)", func(s string) error {
		for o := range strings.SplitSeq(s, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.origins = append(c.origins, o)
			}
		}
		return nil
	})
	fs.DurationVar(&c.resumeWindow, "resume-window", 30*time.Second, "how long a disconnected session can be resumed")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "deadline for a graceful shutdown")
	fs.BoolVar(&c.realIP, "real-ip", false, "take client addresses from X-Real-IP / X-Forwarded-For (only behind a trusted proxy)")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.StringVar(&c.dataDir, "data", "roomwire-data", "`directory` of the embedded store: room documents and logs survive a restart;\n\"\" keeps rooms in memory only. Ignored with -redis")
	fs.StringVar(&c.redisURL, "redis", "", "Redis `URL` (redis://host:port/db) shared by every node: rooms, order and logs live there")
	fs.StringVar(&c.rtcUDP, "rtc-udp", "127.0.0.1:0", "UDP `address` of the WebRTC DataChannel transport (one port for every peer);\n\"\" turns it off. The default serves browsers on this machine; use e.g. :3478 for others")
	fs.BoolVar(&c.rtcPrivate, "rtc-allow-private", false, "let WebRTC peers on private and loopback addresses connect (LAN deployments);\nby default only public addresses, or only loopback when -rtc-udp is a loopback address")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: roomwire [flags]\n\nServes the realtime endpoints under /rt/, the demo page at / and /healthz.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.resumeWindow <= 0 || c.shutdownTimeout <= 0 {
		return c, errors.New("-resume-window and -shutdown-timeout must be positive")
	}
	return c, nil
}

// run serves until ctx ends, then shuts down gracefully. Logs go to stdout;
// its first line is "roomwire listening on http://HOST:PORT".
func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: cfg.logLevel}))

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	broker, presence, router, closeBroker, err := openBroker(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeBroker()
	hub := room.NewHub(&room.Options{Broker: broker, Presence: presence, Logger: log.With("component", "hub")})
	rt := transport.New(hub, &transport.Options{
		ResumeWindow:   cfg.resumeWindow,
		AllowedOrigins: cfg.origins,
		Logger:         log.With("component", "transport"),
		Router:         router,
	})
	srv := &http.Server{
		Handler:           routes(hub, rt, cfg, log),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	if cfg.rtcUDP != "" {
		if _, err := rt.EnableRTC(&rtcdc.Options{UDPAddr: cfg.rtcUDP, AllowRemoteIP: rtcPeers(cfg)}); err != nil {
			ln.Close()
			return fmt.Errorf("WebRTC transport: %w", err)
		}
	}
	fmt.Fprintf(stdout, "roomwire listening on http://%s\n", displayAddr(ln.Addr()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.shutdownTimeout)
	case err = <-served:
		log.Error("server failed", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	// The order matters: the hub tells every client to reconnect (4000) and
	// ends its sessions; the transports then wait for their connections,
	// which http.Server.Shutdown does not track once hijacked; last, the
	// HTTP server stops listening and drains plain requests.
	errs := []error{err}
	if e := hub.Shutdown(sctx); e != nil {
		errs = append(errs, fmt.Errorf("hub shutdown: %w", e))
	}
	if e := rt.Shutdown(sctx); e != nil {
		errs = append(errs, fmt.Errorf("transport shutdown: %w", e))
	}
	if e := srv.Shutdown(sctx); e != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", e))
	}
	if err == nil {
		if e := <-served; !errors.Is(e, http.ErrServerClosed) {
			errs = append(errs, e)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// routes is the server's router: the realtime endpoints, the health check
// and the demo page. Only non-realtime requests are logged: a WebSocket's
// request lasts as long as the connection.
func routes(hub *room.Hub, rt http.Handler, cfg config, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	if cfg.realIP {
		r.Use(middleware.RealIP)
	}
	r.Handle("/rt/*", http.StripPrefix("/rt", rt))
	r.Group(func(r chi.Router) {
		r.Use(requestLog(log))
		r.Get("/healthz", health(hub))
		r.Handle("/*", web.Handler())
	})
	return r
}

// health answers {"status":"ok","sessions":N,"rooms":M}.
func health(hub *room.Hub) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st := hub.Stats()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(struct {
			Status   string `json:"status"`
			Sessions int    `json:"sessions"`
			Rooms    int    `json:"rooms"`
		}{"ok", st.Sessions, st.Rooms})
	}
}

// requestLog logs each request at info level (debug for health checks,
// which probes send every few seconds).
func requestLog(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			level := slog.LevelInfo
			if r.URL.Path == "/healthz" {
				level = slog.LevelDebug
			}
			log.LogAttrs(r.Context(), level, "http",
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", ww.Status()),
				slog.Int("bytes", ww.BytesWritten()),
				slog.Duration("took", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
			)
		})
	}
}

// displayAddr is a listener's address as a URL host: an unspecified IP
// (":8080") shows as localhost.
func displayAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("localhost", fmt.Sprint(tcp.Port))
}

// rtcPeers says which remote addresses the WebRTC transport sends to: only
// public ones by default, so that a client cannot aim the server at hosts
// on its own networks; only loopback when the transport listens on
// loopback; and private ones too when the operator says so.
func rtcPeers(cfg config) func(net.IP) bool {
	if cfg.rtcPrivate {
		return func(ip net.IP) bool {
			return signaling.PublicOnly(ip) || ip.IsPrivate() || ip.IsLoopback()
		}
	}
	if host, _, err := net.SplitHostPort(cfg.rtcUDP); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return signaling.LoopbackOnly
		}
	}
	return signaling.PublicOnly
}

// openBroker returns the broker the flags choose: Redis (many nodes, with
// cross-node presence), the embedded store under -data (one node, durable),
// or memory only. presence and router (the HTTP sessions' routing between
// nodes) are nil but with Redis. release frees them after the hub and the
// transports have shut down: presence first (its members leave at once),
// then the router, then the broker.
func openBroker(cfg config, log *slog.Logger) (broker room.Broker, presence room.Presence, router route.Router, release func(), err error) {
	switch {
	case cfg.redisURL != "":
		ro, err := redis.ParseURL(cfg.redisURL)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("-redis: %w", err)
		}
		rb, err := redisbroker.New(&redisbroker.Options{Redis: ro, Logger: log.With("component", "redis")})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rr, err := redisroute.New(ctx, rb.Client(), &redisroute.Options{
			Node: rb.Node(), Linger: cfg.resumeWindow, Logger: log.With("component", "route"),
		})
		if err != nil {
			rb.Close()
			return nil, nil, nil, nil, fmt.Errorf("-redis: session routing: %w", err)
		}
		p := redisbroker.NewPresence(rb, nil)
		return rb, p.ForHub(), rr, func() { p.Close(); rr.Close(); rb.Close() }, nil
	case cfg.dataDir != "":
		st, err := boltstore.Open(cfg.dataDir, nil)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		return room.NewMemoryBroker(st), nil, nil, func() { st.Close() }, nil
	default:
		return room.NewMemoryBroker(nil), nil, nil, func() {}, nil
	}
}
