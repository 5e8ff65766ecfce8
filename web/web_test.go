package web_test

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
	"github.com/roomwire/roomwire/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(web.Handler())
	defer srv.Close()
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()

	for _, tc := range []struct {
		method, path string
		status       int
		ctype        string
		contains     string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", `href="editor.html"`},
		{"GET", "/editor.html", 200, "text/html; charset=utf-8", `<script type="module" src="editor.js">`},
		{"GET", "/cursors.html", 200, "text/html; charset=utf-8", `<script type="module" src="cursors.js">`},
		{"GET", "/chat.html", 200, "text/html; charset=utf-8", `<script type="module" src="chat.js">`},
		{"GET", "/compare.html", 200, "text/html; charset=utf-8", `<script type="module" src="compare.js">`},
		{"GET", "/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"GET", "/roomwire.js", 200, "text/javascript; charset=utf-8", "export function applyPatch"},
		{"GET", "/editor.js", 200, "text/javascript; charset=utf-8", "from './roomwire.js'"},
		{"GET", "/common.js", 200, "text/javascript; charset=utf-8", "export function bindStatus"},
		{"GET", "/demo.css", 200, "text/css; charset=utf-8", ":root"},
		{"HEAD", "/roomwire.js", 200, "text/javascript; charset=utf-8", ""},
		{"GET", "/index.html", 301, "", ""},
		{"GET", "/missing.js", 404, "", ""},
		{"GET", "/roomwire_test.mjs", 404, "", ""}, // tests are not embedded
		{"GET", "/web.go", 404, "", ""},
		{"POST", "/", 405, "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if tc.ctype != "" {
				if got := res.Header.Get("Content-Type"); got != tc.ctype {
					t.Errorf("Content-Type %q, want %q", got, tc.ctype)
				}
				if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options %q, want nosniff", got)
				}
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
		})
	}

	t.Run("revalidation", func(t *testing.T) {
		res, err := client.Get(srv.URL + "/roomwire.js")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		etag := res.Header.Get("ETag")
		if etag == "" || res.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("ETag %q, Cache-Control %q", etag, res.Header.Get("Cache-Control"))
		}
		req, _ := http.NewRequest("GET", srv.URL+"/roomwire.js", nil)
		req.Header.Set("If-None-Match", etag)
		res, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotModified {
			t.Fatalf("status %d with a matching ETag, want 304", res.StatusCode)
		}
	})

	t.Run("page CSP", func(t *testing.T) {
		res, err := client.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("Content-Security-Policy %q", csp)
		}
	})
}

func TestFS(t *testing.T) {
	for _, name := range []string{"index.html", "roomwire.js", "demo.css", "common.js", "editor.html", "editor.js", "cursors.html", "cursors.js", "chat.html", "chat.js", "compare.html", "compare.js", "favicon.svg"} {
		if b, err := fs.ReadFile(web.FS(), name); err != nil || len(b) == 0 {
			t.Errorf("%s: %d bytes, %v", name, len(b), err)
		}
	}
}

// node returns the path of node, skipping the test when it is missing,
// except in CI (CI=true), where the JavaScript tests must run.
func node(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not on PATH but CI=true: the JavaScript tests of web/roomwire.js must run in CI (.ci/install.sh installs nodejs)")
		}
		t.Skip("node is not on PATH: skipping the JavaScript tests of web/roomwire.js")
	}
	return p
}

// runNode runs node with args in this directory and fails the test with its
// output if it fails.
func runNode(t *testing.T, env []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if testing.Verbose() {
		t.Logf("node %s:\n%s", strings.Join(args, " "), out)
	}
}

// TestJS runs the unit tests of roomwire.js: the RFC 6902 suite in
// room/testdata, prototype pollution, and the client against a fake server.
func TestJS(t *testing.T) {
	runNode(t, nil, "--test", "roomwire_test.mjs")
}

// TestJSAgainstServer runs roomwire.js against a real hub and transports.
func TestJSAgainstServer(t *testing.T) {
	n := node(t)
	// A global WebSocket: built into node 22, behind a flag in node 20.
	var args []string
	probe := "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
	switch {
	case exec.Command(n, "-e", probe).Run() == nil:
	case exec.Command(n, "--experimental-websocket", "-e", probe).Run() == nil:
		args = append(args, "--experimental-websocket")
	default:
		t.Skip("this node has no WebSocket (node 20.10 or later needed)")
	}

	hub := room.NewHub(nil)
	rt := transport.New(hub, nil)
	mux := http.NewServeMux()
	mux.Handle("/rt/", http.StripPrefix("/rt", rt))
	mux.Handle("/", web.Handler())
	srv := httptest.NewServer(mux)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := rt.Shutdown(ctx); err != nil {
			t.Errorf("transport shutdown: %v", err)
		}
		srv.Close()
	}()

	runNode(t, []string{"ROOMWIRE_URL=" + srv.URL + "/rt/"}, append(args, "--test", "roomwire_e2e_test.mjs")...)
}
