package client_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
)

// TestHTMLCharactersByteExact: documents with <, > and & (which Go's
// encoding/json escapes by default) must stay byte-identical on every
// client, whether it built the document from its own ops, from broadcasts,
// or from a join snapshot.
//
// Known server issue: room/message.go encodes server messages with
// json.Marshal, which HTML-escapes the ops, data and document it relays
// ("<" becomes "\u003c"), while the server's own document keeps the bytes
// it applied. Until that is fixed this test skips when escaping is the only
// difference, and fails on any other.
func TestHTMLCharactersByteExact(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	srv := newServer(t, nil, nil)
	a := dial(ctx, t, srv.http.URL, fastOptions("a"))
	b := dial(ctx, t, srv.http.URL, fastOptions("b"))
	ra, rb := join(ctx, t, a, "html"), join(ctx, t, b, "html")
	if err := ra.Patch(json.RawMessage(`[{"op":"add","path":"/t","value":"<b>a & b</b>"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := rb.Patch(json.RawMessage(`[{"op":"add","path":"/u","value":"x<y"}]`)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*client.Room{ra, rb} {
		if err := r.Settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	doc, _, seq, _ := srv.hub.Snapshot("html")
	c := dial(ctx, t, srv.http.URL, fastOptions("c"))
	rc := join(ctx, t, c, "html")
	for i, r := range []*client.Room{ra, rb, rc} {
		if err := r.WaitSeq(ctx, seq); err != nil {
			t.Fatal(err)
		}
		got, _, _ := r.Confirmed()
		if bytes.Equal(got, doc) {
			continue
		}
		t.Errorf("client %d (2 joined last, by snapshot): confirmed\n%s\nserver\n%s", i, got, doc)
	}
}
