package browsertest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemos drives every demo page in one headless Chromium, each page in
// its own browser context (its own storage, like another user), against a
// real server.
func TestDemos(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	browser := startBrowser(ctx, t)
	srv := startServer(t)

	t.Run("index", func(t *testing.T) {
		p := newPage(t, browser, "index", srv.URL+"/", nil)
		p.run("waiting for the demo list", chromedp.WaitVisible(chromedp.CSS(".demos")))
		links := evalJS[[]string](p, `[...document.querySelectorAll('.demos a')].map(a => a.getAttribute('href'))`)
		if strings.Join(links, " ") != "editor.html cursors.html chat.html compare.html" {
			t.Errorf("demo links %q", links)
		}
		p.screenshot("index.png")
	})

	t.Run("editor converges", func(t *testing.T) { testEditor(t, browser, srv.URL) })
	t.Run("cursors direct", func(t *testing.T) { testCursors(t, browser, srv.URL, "", "direct") })
	t.Run("cursors relay", func(t *testing.T) { testCursors(t, browser, srv.URL, "&p2p=blocked", "relay") })
	t.Run("chat", func(t *testing.T) { testChat(t, browser, srv.URL) })
	t.Run("compare", func(t *testing.T) { testCompare(t, browser, srv.URL) })
	t.Run("behind proxies", func(t *testing.T) {
		px := startNginx(ctx, t, srv.Addr)
		t.Run("no upgrade: SSE", func(t *testing.T) { testProxied(t, browser, px.NoUpgrade, "sse") })
		t.Run("buffering: long-polling", func(t *testing.T) { testProxied(t, browser, px.Buffered, "longpoll") })
	})
}

// editorReady waits until an editor page has joined its room.
func editorReady(p *page) {
	p.t.Helper()
	p.run("waiting for the workspace", chromedp.WaitVisible(chromedp.ID("workspace")))
	p.waitJS("joined", `document.querySelector('#raw').textContent !== 'loading…' && document.querySelector('#status').dataset.state === 'open'`, 30*time.Second)
}

// converged waits until the editors show the same confirmed document at
// the same version, with no edit pending.
func converged(t *testing.T, ps ...*page) string {
	t.Helper()
	const state = `JSON.stringify([document.querySelector('#raw').textContent, document.querySelector('#version').textContent, document.querySelector('#pending').dataset.pending])`
	deadline := time.Now().Add(30 * time.Second)
	for {
		var first string
		same := true
		for i, p := range ps {
			p.waitJS("no edit pending", `document.querySelector('#pending').dataset.pending === '0'`, 30*time.Second)
			s := evalJS[string](p, state)
			if i == 0 {
				first = s
			} else if s != first {
				same = false
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("the editors did not converge")
		}
		// Wait (briefly) for the second page to catch up with the first.
		ps[1].pollJS(fmt.Sprintf(`%s === %s`, state, jsString(first)), 2*time.Second)
	}
}

func testEditor(t *testing.T, browser context.Context, base string) {
	room := roomName(t)
	ann := newPage(t, browser, "ann", fmt.Sprintf("%s/editor.html?room=%s&name=ann", base, room), nil)
	bob := newPage(t, browser, "bob", fmt.Sprintf("%s/editor.html?room=%s&name=bob", base, room), nil)
	editorReady(ann)
	editorReady(bob)
	ann.waitJS("bob in ann's members", `document.querySelectorAll('#members li').length === 2`, 20*time.Second)

	// Concurrent edits of different keys, then of the same key.
	ann.setKey("title", "Plan")
	bob.setKey("owner", "bob")
	ann.setKey("items", `[1, 2, 3]`)
	converged(t, ann, bob)
	ann.setKey("title", "Plan A")
	bob.setKey("title", "Plan B")
	doc := converged(t, ann, bob)
	for _, want := range []string{`\"owner\": \"bob\"`, `\"items\": [`, `\"title\": \"Plan `} {
		if !strings.Contains(doc, want) {
			t.Errorf("converged document %s lacks %s", doc, want)
		}
	}

	// A staged conflict: visible as a rebase in ann's activity log.
	ann.run("staging a conflict", chromedp.Click(chromedp.ID("conflict"), chromedp.NodeVisible))
	ann.waitJS("a conflict and its rebase in the log", `[...document.querySelectorAll('#log li.conflict')].some(li => /rebased/.test(li.textContent))`, 30*time.Second)
	ann.waitJS("the conflict demo to finish", `!document.querySelector('#conflict').disabled`, 30*time.Second)
	doc = converged(t, ann, bob)
	if !strings.Contains(doc, `\"race\": \"`) || strings.Contains(doc, `\"race\": \"start\"`) {
		t.Errorf("after the conflict the document is %s", doc)
	}
	note := evalJS[string](ann, `document.querySelector('#log li.conflict').textContent`)
	t.Logf("ann's conflict note: %s", note)
	ann.screenshot("editor-ann.png")
	bob.screenshot("editor-bob.png")
}

func testCursors(t *testing.T, browser context.Context, base, extra, want string) {
	room := roomName(t)
	url := func(name string) string {
		return fmt.Sprintf("%s/cursors.html?room=%s&name=%s&ice=loopback%s", base, room, name, extra)
	}
	ann := newPage(t, browser, "ann", url("ann"), nil)
	bob := newPage(t, browser, "bob", url("bob"), nil)
	for _, p := range []*page{ann, bob} {
		p.waitJS("a peer listed", `document.querySelectorAll('#peers li').length === 1`, 30*time.Second)
	}
	// Each sees the other's path settle: direct when the DataChannel opens;
	// relay, with the direct attempt failed, when it cannot.
	settled := `document.querySelector('#peers li .path-direct') !== null`
	if want == "relay" {
		settled = `document.querySelector('#peers li .path-relay') !== null && /failed/.test(document.querySelector('#peers li .path-detail').textContent)`
	}
	for _, p := range []*page{ann, bob} {
		p.waitJS("the path to show "+want, settled, 40*time.Second)
	}
	// Pointers: each sees the other's cursor where it was moved.
	for i, pair := range [][2]*page{{ann, bob}, {bob, ann}} {
		from, to := pair[0], pair[1]
		fx, fy := 0.25+0.5*float64(i), 0.4
		deadline := time.Now().Add(20 * time.Second)
		for {
			from.moveMouse("#stage", fx, fy)
			fx += 0.001
			seen := to.pollJS(fmt.Sprintf(`(() => { const c = document.querySelector('#stage .cursor:not([hidden])'); return !!c && Math.abs(parseFloat(c.style.left) - %f) < 2; })()`, fx*100), time.Second)
			if seen {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw %s's cursor", to.name, from.name)
			}
		}
	}
	path := evalJS[string](ann, `document.querySelector('#peers li .path').textContent`)
	if path != want {
		t.Errorf("path %q, want %q", path, want)
	}
	ann.screenshot(fmt.Sprintf("cursors-%s-ann.png", want))
	bob.screenshot(fmt.Sprintf("cursors-%s-bob.png", want))
}

func testChat(t *testing.T, browser context.Context, base string) {
	room := roomName(t)
	ann := newPage(t, browser, "ann", fmt.Sprintf("%s/chat.html?room=%s&name=ann", base, room), nil)
	bob := newPage(t, browser, "bob", fmt.Sprintf("%s/chat.html?room=%s&name=bob&transport=longpoll", base, room), nil)
	for _, p := range []*page{ann, bob} {
		p.waitJS("both members listed", `document.querySelectorAll('#members li').length === 2`, 30*time.Second)
	}
	// Who is here, and on which transport.
	ann.waitJS("bob shown on long-polling", `[...document.querySelectorAll('#members li')].some(li => /bob/.test(li.textContent) && li.querySelector('.transport').textContent === 'long-polling')`, 20*time.Second)
	bob.waitJS("ann shown on WebSocket", `[...document.querySelectorAll('#members li')].some(li => /ann/.test(li.textContent) && li.querySelector('.transport').textContent === 'WebSocket')`, 20*time.Second)

	// Typing, then a message.
	ann.run("typing", chromedp.SendKeys(chromedp.ID("say"), "hello bo"))
	bob.waitJS("ann typing", `document.querySelector('#typing').textContent === 'ann is typing…'`, 20*time.Second)
	ann.run("sending", chromedp.SendKeys(chromedp.ID("say"), "b\r"))
	bob.waitJS("ann's message", `[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('hello bob'))`, 20*time.Second)
	bob.waitJS("typing cleared", `document.querySelector('#typing').textContent === ''`, 20*time.Second)
	bob.run("replying", chromedp.SendKeys(chromedp.ID("say"), "hi ann, over long-polling\r"))
	ann.waitJS("bob's reply, confirmed", `[...document.querySelectorAll('#messages li:not(.pending)')].some(li => li.textContent.includes('over long-polling'))`, 20*time.Second)
	bob.run("typing again", chromedp.SendKeys(chromedp.ID("say"), "one more"))
	ann.waitJS("bob typing", `document.querySelector('#typing').textContent === 'bob is typing…'`, 20*time.Second)
	ann.screenshot("chat-ann.png")
	bob.screenshot("chat-bob.png")
}

func testCompare(t *testing.T, browser context.Context, base string) {
	// ?ice=loopback: the server (loopback peers only) is sent only the
	// candidates it can use.
	p := newPage(t, browser, "compare", base+"/compare.html?ice=loopback", nil)
	for _, tr := range []string{"ws", "sse", "longpoll", "rtc"} {
		p.waitJS("a latency figure for "+tr, fmt.Sprintf(`(() => { const d = document.querySelector('.lane[data-transport=%q] .rtt'); return !!d && d.dataset.ms !== undefined && /ms$/.test(d.textContent); })()`, tr), 30*time.Second)
		p.waitJS("messages per second for "+tr, fmt.Sprintf(`/^[1-9][0-9]* msg\/s$/.test(document.querySelector('.lane[data-transport=%q] .rate').textContent)`, tr), 30*time.Second)
	}
	// A few seconds of chart.
	p.waitJS("eight samples per transport", `(() => { const n = [...document.querySelectorAll('.lane .rtt')].map(d => Number(d.dataset.samples ?? 0)); return n.length === 4 && n.every(x => x >= 8); })()`, 30*time.Second)
	if got := evalJS[string](p, `document.querySelector('.lane[data-transport="rtc"] .pill').textContent`); got != "connected · DataChannel" {
		t.Errorf("the DataChannel lane's status is %q", got)
	}
	figures := evalJS[[]string](p, `[...document.querySelectorAll('.lane')].map(l => l.dataset.transport + ': ' + [...l.querySelectorAll('dd')].map(d => d.textContent).join(' | '))`)
	for _, f := range figures {
		t.Logf("%s", f)
	}
	p.waitJS("the chart drawn", `document.querySelector('#chart').width > 0`, 5*time.Second)
	p.screenshot("compare.png")
}

// testProxied opens the editor through a proxy and checks that it connects
// over want and works.
func testProxied(t *testing.T, browser context.Context, base, want string) {
	room := roomName(t)
	ann := newPage(t, browser, "ann via proxy", fmt.Sprintf("%s/editor.html?room=%s&name=ann", base, room), wsRefused)
	ann.waitJS("connected over "+want, fmt.Sprintf(`document.querySelector('#status').dataset.transport === %q`, want), 40*time.Second)
	editorReady(ann)
	ann.setKey("via", want)
	ann.waitJS("the edit confirmed", `document.querySelector('#version').textContent === 'version 1' && document.querySelector('#pending').dataset.pending === '0'`, 20*time.Second)
	members := evalJS[string](ann, `[...document.querySelectorAll('#members .transport')].map(e => e.className).join(' ')`)
	if !strings.Contains(members, "t-"+want) {
		t.Errorf("members %q: the server should report transport %s", members, want)
	}
	ann.screenshot(fmt.Sprintf("editor-via-%s.png", want))
}
