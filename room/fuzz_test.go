package room

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// FuzzHandle feeds arbitrary client messages — the envelope decoder and
// everything behind it, patches included — to a hub with two members in a
// room. The server must never panic or hang, the room's document must stay
// valid JSON within the limits, and every message must leave the room with
// a consistent version and seq.
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		`{"t":"patch","room":"f","base":0,"ops":[{"op":"add","path":"/a","value":1}]}`,
		`{"t":"patch","room":"f","base":0,"ops":[{"op":"copy","from":"/a","path":"/b"},{"op":"move","from":"/b","path":"/c"}]}`,
		`{"t":"patch","room":"f","base":0,"ops":[{"op":"test","path":"/a","value":1},{"op":"remove","path":"/a"}]}`,
		`{"t":"patch","room":"f","base":0,"ops":[{"op":"add","path":"/arr","value":[1,2]},{"op":"add","path":"/arr/-1","value":0}]}`,
		`{"t":"patch","room":"f","base":18446744073709551615,"ops":[]}`,
		`{"t":"pub","room":"f","cid":"x","data":{"n":[1,2,{"deep":null}]}}`,
		`{"t":"eph","room":"f","key":"cursor","data":{"x":1}}`,
		`{"t":"join","room":"g","since":3}`,
		`{"t":"leave","room":"f"}`,
		`{"t":"ping","data":"x"}`,
		`{"t":"frob"}`,
		`{"t":`,
		`[]`,
		`{"t":"patch","room":"f","base":0,"ops":{"op":"add"}}`,
		`{"t":"join","room":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxDocBytes: 4096, MaxPatchOps: 16, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h := NewHub(&Options{Limits: lim, Rate: 1e6, Burst: 1e6})
		defer h.Shutdown(context.Background())
		a, b := newRecorder("a", 0), newRecorder("b", 0)
		ctx := context.Background()
		for _, s := range []*recorder{a, b} {
			h.Connect(s, json.RawMessage(`{"name":"x"}`))
			h.Handle(ctx, s, &Envelope{Type: TypeJoin, Room: "f"})
		}
		for line := range bytes.SplitSeq(raw, []byte{'\n'}) {
			e, err := ParseEnvelope(line)
			if err != nil {
				continue
			}
			h.Handle(ctx, a, e)
		}
		doc, v, seq, ok := h.Snapshot("f")
		if !ok {
			return // a left, b is still in: should be ok; tolerate leave of both
		}
		if !json.Valid(doc) || len(doc) > lim.MaxDocBytes {
			t.Fatalf("document invalid or over the limit: %q", doc)
		}
		if v > seq {
			t.Fatalf("version %d ahead of seq %d", v, seq)
		}
		for _, m := range b.msgs {
			if !json.Valid(m.Body) {
				t.Fatalf("server sent invalid JSON: %q", m.Body)
			}
		}
	})
}
