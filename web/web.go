// Package web holds roomwire's browser files, embedded in the binary: the
// client module roomwire.js and the demo pages: index.html (links to the
// others), editor.html (a collaborative JSON document), cursors.html (live
// cursors, peer to peer), chat.html (chat with presence) and compare.html
// (the transports side by side), with their scripts, common.js and
// demo.css. There is no build step: the files served are the files in this
// directory, as reviewed.
//
// roomwire.js is tested by roomwire_test.mjs (node --test), which go test
// runs when node is installed; the pages are tested in headless Chromium by
// the package web/browsertest.
//
// FS and Handler have no side effects and no shared state beyond the
// read-only embedded files; Handler is safe for concurrent use.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed *.html *.css *.js favicon.svg
var files embed.FS

// FS returns the browser files, at the root of the file system:
// "roomwire.js", "index.html", "editor.html", "demo.css" and so on.
func FS() fs.FS { return files }

// contentTypes is the package's own table, so that the host's mime.types
// cannot change what the browser is told (a module script must be served
// as JavaScript).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// The demo pages may load only their own files and talk to their own
// origin (WebSocket, fetch, EventSource). WebRTC is not governed by CSP.
const pageCSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type file struct {
	body  []byte
	ctype string
	etag  string
}

type handler map[string]file

// Handler serves FS: "/" is the index of the demos, "/roomwire.js" the
// client, "/editor.html" a demo, and so on. Mount it under a prefix with http.StripPrefix; the page refers to
// its files by relative URLs. Only GET and HEAD are served. Responses carry
// an ETag and "Cache-Control: no-cache", so a browser revalidates and gets
// 304 Not Modified until the binary changes.
func Handler() http.Handler {
	h := handler{}
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		h["/"+name] = file{
			body:  body,
			ctype: contentTypes[path.Ext(name)],
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("web: reading the embedded files: " + err.Error()) // cannot happen: they are in the binary
	}
	h["/"] = h["/index.html"]
	return h
}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/index.html" {
		// One URL per page, as http.FileServer does.
		http.Redirect(w, r, "./", http.StatusMovedPermanently)
		return
	}
	f, ok := h[p]
	if !ok || f.ctype == "" {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.ctype)
	hd.Set("ETag", f.etag)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(f.ctype, "text/html") {
		hd.Set("Content-Security-Policy", pageCSP)
		hd.Set("Referrer-Policy", "no-referrer")
	}
	http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(f.body))
}
