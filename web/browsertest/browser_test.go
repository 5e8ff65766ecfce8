package browsertest_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/signaling"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/transport/rtcdc"
	"github.com/roomwire/roomwire/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is roomwire as cmd/roomwire wires it with its defaults: the
// transports under /rt/, the WebRTC DataChannel one included (UDP on
// loopback, loopback peers only), and the web files at /.
type server struct {
	URL  string
	Addr string // host:port
}

func startServer(t *testing.T) *server {
	t.Helper()
	hub := room.NewHub(nil)
	rt := transport.New(hub, nil)
	if _, err := rt.EnableRTC(&rtcdc.Options{UDPAddr: "127.0.0.1:0", AllowRemoteIP: signaling.LoopbackOnly}); err != nil {
		t.Fatalf("enabling the DataChannel transport: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/rt/", http.StripPrefix("/rt", rt))
	mux.Handle("/", web.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := rt.Shutdown(ctx); err != nil {
			t.Errorf("transport shutdown: %v", err)
		}
		srv.CloseClientConnections()
		srv.Close()
	})
	return &server{URL: srv.URL, Addr: srv.Listener.Addr().String()}
}

// chromium returns the browser's path: without one the test is skipped,
// or fails when CI=true.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("Chromium is not installed, and CI needs it for the browser tests: apt-get install -y chromium")
	}
	t.Skip("Chromium is not installed (apt-get install -y chromium): skipping the browser tests")
	return ""
}

// startBrowser runs one headless Chromium until the test ends, and returns
// its context: pages are opened from it with newPage.
func startBrowser(ctx context.Context, t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 860),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
		// WebRTC between two pages of this browser, on loopback, with real
		// addresses in the candidates (no mDNS names).
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // kills Chromium and waits for it
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return bctx
}

// page is one tab in its own browser context (its own storage, like
// another user), with every console error and uncaught exception
// collected.
type page struct {
	ctx  context.Context
	t    *testing.T
	name string

	mu     sync.Mutex
	errors []string
	allow  *regexp.Regexp // browser log errors to tolerate (nil: none)
}

// newPage opens url in a fresh browser context. allow, if not nil, matches
// browser log entries (not console calls or exceptions) that are expected
// on this page, such as a WebSocket refused by a proxy.
func newPage(t *testing.T, browser context.Context, name, url string, allow *regexp.Regexp) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	p := &page{ctx: ctx, t: t, name: name, allow: allow}
	// Subscribe before the page loads, so that no message is missed.
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return // the page is closed
			}
			switch {
			case m.IsException():
				p.fail("uncaught exception at %s:%d: %s", m.URL, m.Line, m.Text)
			case m.Type == chromedp.ConsoleError && m.Source != "":
				if p.allow == nil || !p.allow.MatchString(m.Text) {
					p.fail("browser log (%s): %s %s", m.Source, m.Text, m.URL)
				}
			case m.Type == chromedp.ConsoleError || m.Type == "assert":
				p.fail("console.%s: %s", m.Type, m.Text)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		p.checkErrors()
	})
	// Chromium offers WebRTC candidates on every interface, loopback
	// included (with --allow-loopback-in-peer-connection), only to an
	// origin that may capture media; otherwise only the default route's.
	if u, err := neturl.Parse(url); err == nil {
		bcid := chromedp.FromContext(ctx).BrowserContextID
		for _, perm := range []string{"camera", "microphone"} {
			_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
				Permission:       &cdpbrowser.PermissionDescriptor{Name: perm},
				Setting:          cdpbrowser.PermissionSettingGranted,
				Origin:           u.Scheme + "://" + u.Host,
				BrowserContextID: bcid,
			})
			if err != nil {
				t.Fatalf("%s: granting %s: %v", name, perm, err)
			}
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 860), chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: opening %s: %v", name, url, err)
	}
	return p
}

func (p *page) fail(format string, a ...any) {
	p.mu.Lock()
	p.errors = append(p.errors, fmt.Sprintf(format, a...))
	p.mu.Unlock()
}

// checkErrors fails the test for every console error seen so far.
func (p *page) checkErrors() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errors {
		p.t.Errorf("%s: %s", p.name, e)
	}
	p.errors = nil
}

// run runs actions on the page, failing the test with what was being done.
func (p *page) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	p.check(what, chromedp.Do(p.ctx, actions...))
}

func (p *page) check(what string, err error) {
	p.t.Helper()
	if err == nil {
		return
	}
	p.checkErrors()
	body, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.querySelector('main')?.innerText.slice(0, 1500) ?? ''`))
	p.t.Fatalf("%s: %s: %v\npage text:\n%s", p.name, what, err, body)
}

// waitJS waits until the JavaScript expression is true, polling.
func (p *page) waitJS(what, expr string, timeout time.Duration) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	p.check("waiting until "+what, err)
}

// pollJS waits until the JavaScript expression is true and reports
// whether it became true within timeout.
func (p *page) pollJS(expr string, timeout time.Duration) bool {
	p.t.Helper()
	ok, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil && p.ctx.Err() != nil {
		p.check("polling "+expr, err)
	}
	return err == nil && ok
}

// evalJS returns the value of a JavaScript expression on p.
func evalJS[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	p.check("evaluating "+expr, err)
	return v
}

// screenshot saves a PNG of the whole page as an artifact.
func (p *page) screenshot(file string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	p.check("taking a screenshot", err)
	path := filepath.Join(artifacts(p.t), file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot of %s: %s", p.name, path)
}

var (
	artifactsOnce sync.Once
	artifactsDir  string
)

// artifacts is $ROOMWIRE_ARTIFACTS, or a temporary directory (kept, so
// that the logged paths stay valid after the test).
func artifacts(t *testing.T) string {
	if d := os.Getenv("ROOMWIRE_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	artifactsOnce.Do(func() {
		d, err := os.MkdirTemp("", "roomwire-artifacts-")
		if err != nil {
			t.Fatal(err)
		}
		artifactsDir = d
	})
	return artifactsDir
}

// moveMouse moves the real (CDP) mouse to the fractions fx, fy of the
// element sel.
func (p *page) moveMouse(sel string, fx, fy float64) {
	p.t.Helper()
	r := evalJS[struct{ X, Y, W, H float64 }](p, fmt.Sprintf(`(() => { const r = document.querySelector(%q).getBoundingClientRect(); return {X: r.left, Y: r.top, W: r.width, H: r.height}; })()`, sel))
	p.run("moving the mouse", chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, r.X+fx*r.W, r.Y+fy*r.H))
}

// setKey fills the editor's key/value form and submits it.
func (p *page) setKey(key, value string) {
	p.t.Helper()
	p.run("setting "+key,
		chromedp.SetValue(chromedp.ID("kv-key"), key),
		chromedp.SetValue(chromedp.ID("kv-value"), value),
		chromedp.Click(chromedp.CSS(`#kv-form button[type="submit"]`), chromedp.NodeVisible),
	)
}

func roomName(t *testing.T) string {
	return fmt.Sprintf("bt-%s-%d", strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")), time.Now().UnixNano()%1e6)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return fmt.Sprintf("%q", s) }

// wsRefused matches what Chromium logs when a proxy refuses the WebSocket
// handshake (expected behind the test's nginx).
var wsRefused = regexp.MustCompile(`WebSocket connection to .* failed`)

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

type proxies struct {
	NoUpgrade string // base URL of a proxy that strips Upgrade
	Buffered  string // base URL of one that also buffers responses (gzip)
}

// startNginx runs nginx with testdata/nginx.conf.tmpl in front of upstream
// until the test ends. Without nginx the test fails when CI=true and is
// skipped otherwise.
func startNginx(ctx context.Context, t *testing.T, upstream string) proxies {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nginx is not installed, and CI needs it: apt-get install -y nginx (%v)", err)
		}
		t.Skipf("nginx is not installed (apt-get install -y nginx): %v", err)
	}
	dir := t.TempDir()
	ports := make([]int, 2)
	var held []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l) // held until both are chosen, so they differ
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range held {
		l.Close() // nginx binds them next; another process taking one in between fails the start loudly
	}
	tmpl, err := template.ParseFiles("testdata/nginx.conf.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must write to dir, which only root may
	}
	conf := filepath.Join(dir, "nginx.conf")
	f, err := os.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	err = tmpl.Execute(f, map[string]any{"Dir": dir, "NoUpgradePort": ports[0], "BufferedPort": ports[1], "Upstream": upstream, "User": user})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return runNginx(ctx, t, bin, dir, conf, ports)
}

func runNginx(ctx context.Context, t *testing.T, bin, dir, conf string, ports []int) proxies {
	t.Helper()
	cmd := exec.Command(bin, "-e", "stderr", "-p", dir, "-c", conf, "-g", "daemon off;")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	ready := make(chan struct{})
	logDone := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "start worker processes") {
				close(ready)
			}
		}
		logDone <- lines
	}()
	exited := make(chan error, 1)
	go func() {
		lines := <-logDone
		err := cmd.Wait()
		if err != nil && len(lines) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.Join(lines, "\n"))
		}
		exited <- err
	}()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("nginx exited at start: %v", err)
	case <-ctx.Done():
		stop()
		t.Fatalf("nginx did not start: %v", ctx.Err())
	}
	t.Cleanup(stop)
	return proxies{
		NoUpgrade: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		Buffered:  fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
	}
}
