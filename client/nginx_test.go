package client_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// nginx is a running nginx in front of an upstream, in one of the modes of
// testdata/nginx.conf.tmpl.
type nginx struct {
	t    testing.TB
	url  string
	conf string
	tmpl *template.Template
	vars map[string]any
	pid  int

	mu     sync.Mutex
	starts int           // "start worker processes" lines: 1 after start, +1 per reload
	logged chan struct{} // closed and replaced on every such line
	log    []string
	dead   chan struct{} // closed when nginx has exited
}

// startNginx runs nginx in front of upstream (host:port) in mode until the
// test ends. Without nginx the test fails when CI=true and is skipped
// otherwise.
func startNginx(ctx context.Context, t testing.TB, upstream, mode string) *nginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nginx is not installed, and CI needs it (apt-get install -y nginx): %v", err)
		}
		t.Skipf("nginx is not installed (apt-get install -y nginx): %v", err)
	}
	tmpl, err := template.ParseFiles("testdata/nginx.conf.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nginx binds it next: should another process take it meanwhile, nginx fails to start, loudly
	dir := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers write under dir
	}
	n := &nginx{
		t:      t,
		url:    fmt.Sprintf("http://127.0.0.1:%d", port),
		conf:   filepath.Join(dir, "nginx.conf"),
		tmpl:   tmpl,
		vars:   map[string]any{"Dir": dir, "Port": port, "Upstream": upstream, "User": user},
		logged: make(chan struct{}),
		dead:   make(chan struct{}),
	}
	n.write(mode)
	cmd := exec.Command(bin, "-e", "stderr", "-p", dir, "-c", n.conf, "-g", "daemon off;")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	n.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			n.mu.Lock()
			n.log = append(n.log, sc.Text())
			if strings.Contains(sc.Text(), "start worker processes") {
				n.starts++
				close(n.logged)
				n.logged = make(chan struct{})
			}
			n.mu.Unlock()
		}
		exited <- cmd.Wait()
		close(n.dead)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // fast shutdown: the master stops its workers
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	if !n.waitStarts(ctx, 1) {
		t.Fatalf("nginx did not start:\n%s", n.stderr())
	}
	return n
}

func (n *nginx) write(mode string) {
	n.vars["Mode"] = mode
	var b bytes.Buffer
	if err := n.tmpl.Execute(&b, n.vars); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(n.conf, b.Bytes(), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// reload switches nginx to mode as an operator would: new configuration,
// SIGHUP. New connections get the new mode; the old worker finishes the
// requests under way (a held poll, an open stream) and closes idle
// keep-alive connections.
func (n *nginx) reload(ctx context.Context, mode string) {
	n.t.Helper()
	n.mu.Lock()
	want := n.starts + 1
	n.mu.Unlock()
	n.write(mode)
	if err := syscall.Kill(n.pid, syscall.SIGHUP); err != nil {
		n.t.Fatal(err)
	}
	if !n.waitStarts(ctx, want) {
		n.t.Fatalf("nginx did not reload:\n%s", n.stderr())
	}
}

func (n *nginx) waitStarts(ctx context.Context, k int) bool {
	for {
		n.mu.Lock()
		done, ch := n.starts >= k, n.logged
		n.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-n.dead:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (n *nginx) stderr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.log, "\n")
}
