package clustertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/room/boltstore"
	"github.com/roomwire/roomwire/room/redisbroker"
	"github.com/roomwire/roomwire/transport"
)

// Environment of a child server process (see RunChildIfAsked).
const (
	envChild  = "ROOMWIRE_TEST_CHILD"  // "bolt" or "redis"
	envDir    = "ROOMWIRE_TEST_DIR"    // bolt: the data directory
	envRedis  = "ROOMWIRE_TEST_REDIS"  // redis: host:port
	envPrefix = "ROOMWIRE_TEST_PREFIX" // redis: key prefix
	// redis: "TTL INTERVAL" (durations) wires redisbroker.Presence in
	envPresence = "ROOMWIRE_TEST_PRESENCE"
)

// RunChildIfAsked turns the test binary into a server process when the
// environment asks for one (StartChild does): call it first thing in
// TestMain. It serves until killed or until its stdin closes, then exits.
func RunChildIfAsked() {
	kind := os.Getenv(envChild)
	if kind == "" {
		return
	}
	if err := serveChild(kind); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func serveChild(kind string) error {
	var broker room.Broker
	var presence room.Presence
	var closeBroker func() error
	switch kind {
	case "bolt":
		st, err := boltstore.Open(os.Getenv(envDir), nil)
		if err != nil {
			return err
		}
		broker, closeBroker = room.NewMemoryBroker(st), st.Close
	case "redis":
		b, err := redisbroker.New(&redisbroker.Options{
			Redis:  &redis.Options{Addr: os.Getenv(envRedis), Protocol: 2, DisableIdentity: true},
			Prefix: os.Getenv(envPrefix),
		})
		if err != nil {
			return err
		}
		broker, closeBroker = b, b.Close
		if v := os.Getenv(envPresence); v != "" {
			var o redisbroker.PresenceOptions
			ttl, interval, _ := strings.Cut(v, " ")
			var err1, err2 error
			o.TTL, err1 = time.ParseDuration(ttl)
			o.Interval, err2 = time.ParseDuration(interval)
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("%s=%q: %w", envPresence, v, err)
			}
			p := redisbroker.NewPresence(b, &o)
			presence = p.ForHub()
			closeBroker = func() error { return errors.Join(p.Close(), b.Close()) }
		}
	default:
		return fmt.Errorf("unknown child kind %q", kind)
	}
	hub := room.NewHub(&room.Options{Broker: broker, Presence: presence, Rate: 1e6, Burst: 1e6})
	tr := transport.New(hub, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: tr}
	go srv.Serve(l)
	fmt.Printf("ADDR %s\n", l.Addr())
	io.Copy(io.Discard, os.Stdin) // until the parent goes away
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hub.Shutdown(ctx)
	tr.Shutdown(ctx)
	srv.Shutdown(ctx)
	return closeBroker()
}

// Child is a server process started from the test binary.
type Child struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	Addr   string // host:port
	stderr *strings.Builder
	once   sync.Once
	exited chan struct{}
}

// StartChildBolt starts a server over a boltstore in dir.
func StartChildBolt(t testing.TB, dir string) *Child {
	return startChild(t, envChild+"=bolt", envDir+"="+dir)
}

// StartChildRedis starts a server over a Redis broker, with cross-node
// presence (redisbroker.Presence) when presence is not nil.
func StartChildRedis(t testing.TB, redisAddr, prefix string, presence *redisbroker.PresenceOptions) *Child {
	env := []string{envChild + "=redis", envRedis + "=" + redisAddr, envPrefix + "=" + prefix}
	if presence != nil {
		env = append(env, fmt.Sprintf("%s=%v %v", envPresence, presence.TTL, presence.Interval))
	}
	return startChild(t, env...)
}

// startChild re-executes the test binary (whose TestMain must call
// RunChildIfAsked) with env, and waits for the address it serves on.
func startChild(t testing.TB, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &Child{t: t, cmd: cmd, stdin: stdin, stderr: &strings.Builder{}, exited: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: c.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not start: %q %v; stderr: %s", line, err, c.stderr.String())
	}
	c.Addr = addr
	go func() {
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.Kill)
	return c
}

// WSURL is the child's WebSocket endpoint.
func (c *Child) WSURL() string { return "ws://" + c.Addr + "/ws" }

// Kill sends SIGKILL and waits for the process to end. Idempotent.
func (c *Child) Kill() {
	c.once.Do(func() {
		c.cmd.Process.Kill()
		<-c.exited
		c.stdin.Close()
	})
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
