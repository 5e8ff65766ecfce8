package clustertest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServerBinary is the server the tests start (Debian package
// redis-server).
const RedisServerBinary = "redis-server"

// Redis is a redis-server child process for one test, on 127.0.0.1 and a
// free port, with its files in a temporary directory.
type Redis struct {
	t    testing.TB
	port int
	dir  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *strings.Builder
}

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// AppendOnly turns on the append-only file with appendfsync always,
	// so that a kill -9 of Redis loses nothing it acknowledged. Default:
	// no persistence at all (--save '' --appendonly no).
	AppendOnly bool
}

// StartRedis starts a redis-server and stops it in t.Cleanup. Without the
// binary the test is skipped, or fails when the environment variable CI is
// "true".
func StartRedis(t testing.TB, opts *RedisOptions) *Redis {
	t.Helper()
	if _, err := exec.LookPath(RedisServerBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (apt-get install redis-server): %v", RedisServerBinary, err)
		}
		t.Skipf("%s not found (apt-get install redis-server)", RedisServerBinary)
	}
	var o RedisOptions
	if opts != nil {
		o = *opts
	}
	r := &Redis{t: t, dir: t.TempDir()}
	r.args = []string{"--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", r.dir,
		"--save", "", "--daemonize", "no", "--logfile", "", "--loglevel", "notice"}
	if o.AppendOnly {
		r.args = append(r.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		r.args = append(r.args, "--appendonly", "no")
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if r.port, err = freePort(); err != nil {
			continue
		}
		if err = r.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Options returns go-redis options for the server, with short timeouts.
func (r *Redis) Options() *redis.Options {
	return &redis.Options{Addr: r.Addr(), Protocol: 2, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, DisableIdentity: true}
}

// start runs redis-server and returns once it accepts connections.
func (r *Redis) start() error {
	cmd := exec.Command(RedisServerBinary, append([]string{"--port", strconv.Itoa(r.port)}, r.args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	log := &strings.Builder{}
	ready := make(chan bool, 1)
	exited := make(chan struct{})
	go func() {
		// Read the log until the process exits: readiness, then drain.
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			r.mu.Lock()
			log.WriteString(line + "\n")
			r.mu.Unlock()
			if !signalled && strings.Contains(line, "Ready to accept connections") {
				signalled = true
				ready <- true
			}
		}
		io.Copy(io.Discard, out)
		if !signalled {
			ready <- false
		}
		cmd.Wait()
		close(exited)
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case ok := <-ready:
		if !ok {
			<-exited
			r.mu.Lock()
			defer r.mu.Unlock()
			return fmt.Errorf("redis-server exited: %s", log.String())
		}
	case <-timer.C:
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server not ready after 10 s: %s", log.String())
	}
	r.mu.Lock()
	r.cmd, r.exited, r.log = cmd, exited, log
	r.mu.Unlock()
	return nil
}

// Kill sends SIGKILL and waits for the process to exit.
func (r *Redis) Kill() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Restart starts the server again on the same port and directory (after
// Kill).
func (r *Redis) Restart() {
	r.t.Helper()
	r.Kill()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		// The port may linger for a moment after the kill.
		if err = r.start(); err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("restarting redis-server: %v", err)
}

// Stop kills the server (tests need no graceful shutdown).
func (r *Redis) Stop() { r.Kill() }

// Log returns what the current server has logged.
func (r *Redis) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.log == nil {
		return ""
	}
	return r.log.String()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
