package room

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
)

// FuzzApplyPatch checks ApplyPatch on arbitrary documents and patches, with
// small limits so that the limit paths run too. ApplyPatch must not panic
// (not even a recovered one), must leave its input alone, and must return
// one of its sentinel errors or a valid, compact document within the limits
// that a second application reproduces byte for byte. Where the patch
// parses, the outcome must also match refApply, a plain RFC 6902
// implementation on decoded values.
func FuzzApplyPatch(f *testing.F) {
	for _, c := range loadConformance(f) {
		f.Add([]byte(c.Doc), []byte(c.Patch))
	}
	for _, c := range libraryPanics {
		f.Add([]byte(c.doc), []byte(c.ops))
	}
	for _, c := range [][2]string{
		{`{"":{"":1},"a":[0,1]}`, `[{"op":"add","path":"//x","value":{"01":[]}},{"op":"move","from":"/a/1","path":"///x/01/-"},{"op":"test","path":"/","value":{"":1,"x":{"01":[1]}}}]`},
		{`{"\u0000":1,"-0":[1,2]}`, `[{"op":"remove","path":"/-0/-0"},{"op":"copy","from":"","path":"/\u0000\u0000"}]`},
		{`[{"a":[null,1.0]}]`, `[{"op":"copy","from":"/0","path":""},{"op":"test","path":"","value":{"a":[null,1]}},{"op":"move","from":"/a/0","path":"/a/-"}]`},
		{`{"a":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, `[{"op":"copy","from":"/a","path":"/b"},{"op":"copy","from":"","path":"/c"},{"op":"copy","from":"","path":"/d"},{"op":"copy","from":"","path":"/e"},{"op":"copy","from":"","path":"/f"},{"op":"copy","from":"","path":"/g"}]`},
		{`{"a":[[[[[[[1]]]]]]]}`, `[{"op":"add","path":"/a/0/0/0/0/0/0/-","value":[[]]}]`},
	} {
		f.Add([]byte(c[0]), []byte(c[1]))
	}

	f.Fuzz(func(t *testing.T, doc, ops []byte) {
		checkApplyPatch(t, doc, ops, fuzzLimits)
	})
}

// fuzzLimits are small, so that fuzzing reaches every limit.
var fuzzLimits = Limits{MaxDocBytes: 2048, MaxPatchOps: 16, MaxDepth: 8}

// checkApplyPatch applies ops to doc and checks the properties listed on
// FuzzApplyPatch.
func checkApplyPatch(t *testing.T, doc, ops []byte, lim Limits) {
	docCopy, opsCopy := bytes.Clone(doc), bytes.Clone(ops)
	out, err := ApplyPatch(doc, ops, lim)
	if !bytes.Equal(doc, docCopy) || !bytes.Equal(ops, opsCopy) {
		t.Fatal("input modified")
	}
	checkAgainstReference(t, doc, ops, lim, out, err)
	if err != nil {
		if errors.Is(err, errRecovered) {
			t.Fatalf("recovered panic: %v", err)
		}
		if !errors.Is(err, ErrBadPatch) && !errors.Is(err, ErrTestFailed) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		return
	}
	if !json.Valid(out) {
		t.Fatalf("invalid JSON: %q", out)
	}
	if out[0] != '{' && out[0] != '[' {
		t.Fatalf("root is not an object or array: %q", out)
	}
	if len(out) > lim.MaxDocBytes {
		t.Fatalf("%d bytes, over MaxDocBytes", len(out))
	}
	if d := decoderDepth(t, out); d > lim.MaxDepth {
		t.Fatalf("depth %d, over MaxDepth: %q", d, out)
	}
	if !isCompact(out) {
		t.Fatalf("not compact: %q", out)
	}
	again, err := ApplyPatch(doc, ops, lim)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("second application differs: %q, %v; first %q", again, err, out)
	}
	if same, err := ApplyPatch(out, []byte(`[]`), lim); err != nil || !bytes.Equal(same, out) {
		t.Fatalf("empty patch changes the result: %q, %v; result %q", same, err, out)
	}
}

// FuzzPatchSemantics complements FuzzApplyPatch, whose random bytes are
// rarely a valid patch: it builds well-formed patches from a small alphabet
// of tokens and values chosen to hit the library's weak spots (empty member
// names, non-canonical indices, "-", NUL prefixes, null elements, numbers
// in several spellings), and checks them the same way, the reference
// comparison included.
func FuzzPatchSemantics(f *testing.F) {
	f.Add(uint8(2), []byte{0, 2, 1, 0, 3, 5, 1, 1, 2, 4, 2, 0, 1, 1, 6})
	f.Add(uint8(3), []byte{4, 1, 0, 2, 2, 6, 3, 5, 2, 1, 3, 1, 8, 2, 0})
	f.Add(uint8(4), []byte{1, 1, 6, 3, 2, 0, 7, 8, 0, 0, 9, 5, 1, 13, 1})
	f.Fuzz(func(t *testing.T, docChoice uint8, prog []byte) {
		doc := semanticDocs[int(docChoice)%len(semanticDocs)]
		checkApplyPatch(t, []byte(doc), buildPatch(prog), fuzzLimits)
	})
}

var (
	semanticDocs = []string{
		`{}`,
		`[]`,
		`{"a":{"":[1,{"01":null}]},"":{"":0,"b":[]},"0":[[],null]}`,
		`[{"a":[null,1.0]},{"\u0000":{"":[]}},[0,1,2]]`,
		`{"01":1,"-0":[0],"+1":{"~":{"/":1e0}},"-":[]}`,
	}
	semanticTokens = []string{"", "a", "b", "0", "1", "2", "01", "-", "-0", "+1", "~", "/", "\x00", "\x00\x00"}
	semanticValues = []string{`null`, `1`, `1.0`, `"x"`, `[]`, `{}`, `[null]`, `{"":1}`, `{"01":[],"a":{}}`, `[[1],{"b":null}]`, `"\u0000"`, `0`}
	semanticOps    = []string{"add", "remove", "replace", "move", "copy", "test"}
)

// buildPatch turns prog into a JSON patch: per operation one byte for the
// op, pointers as a length byte (0 to 3 tokens) and token bytes, and one
// byte for the value.
func buildPatch(prog []byte) []byte {
	next := func() int {
		if len(prog) == 0 {
			return 0
		}
		b := prog[0]
		prog = prog[1:]
		return int(b)
	}
	pointer := func() string {
		tokens := make([]string, next()%4)
		for i := range tokens {
			tokens[i] = semanticTokens[next()%len(semanticTokens)]
		}
		return encodePointer(tokens)
	}
	var ops []map[string]any
	for len(prog) > 0 && len(ops) < fuzzLimits.MaxPatchOps {
		op := semanticOps[next()%len(semanticOps)]
		m := map[string]any{"op": op, "path": pointer()}
		switch op {
		case "move", "copy":
			m["from"] = pointer()
		case "add", "replace", "test":
			m["value"] = json.RawMessage(semanticValues[next()%len(semanticValues)])
		}
		ops = append(ops, m)
	}
	b, err := json.Marshal(ops)
	if err != nil {
		panic(err)
	}
	return b
}

// decoderDepth measures nesting depth with encoding/json, independently of
// scanJSON.
func decoderDepth(t *testing.T, b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest
		}
		if err != nil {
			t.Fatal(err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

// checkAgainstReference compares ApplyPatch's outcome with refApply's where
// the comparison is meaningful: the patch parses, and the document is a
// valid object or array, within the limits, without duplicate member names
// (whose meaning JSON leaves open). Errors from limits are not compared.
func checkAgainstReference(t *testing.T, doc, ops []byte, lim Limits, out []byte, err error) {
	doc = trimSpace(doc)
	if errors.Is(err, ErrTooLarge) || len(doc) > lim.MaxDocBytes || !json.Valid(doc) || doc[0] != '{' && doc[0] != '[' {
		return
	}
	if depth, _, dup := scanJSON(doc, true); dup || depth > lim.MaxDepth {
		return
	}
	patch, perr := parsePatch(ops, lim)
	if perr != nil {
		if err == nil {
			t.Fatalf("the patch does not parse (%v) but ApplyPatch succeeded", perr)
		}
		return
	}
	v, derr := decodeAny(doc)
	if derr != nil {
		t.Fatal(derr)
	}
	want, rerr := refApply(v, patch)
	switch {
	case err == nil && rerr != nil:
		t.Fatalf("ApplyPatch succeeded with %s; the reference fails: %v", out, rerr)
	case err != nil && rerr == nil:
		got, _ := json.Marshal(want)
		t.Fatalf("ApplyPatch failed (%v); the reference gives %s", err, got)
	case err != nil:
		if errors.Is(err, ErrTestFailed) != errors.Is(rerr, ErrTestFailed) {
			t.Fatalf("ApplyPatch: %v; the reference: %v", err, rerr)
		}
	default:
		got, derr := decodeAny(out)
		if derr != nil || !valuesEqual(got, want) {
			w, _ := json.Marshal(want)
			t.Fatalf("ApplyPatch gives %s; the reference %s", out, w)
		}
	}
}

// refApply is a direct RFC 6902 implementation on values decoded with
// UseNumber, with ApplyPatch's rule that the root stays an object or array.
// It serves only as a fuzzing oracle.
func refApply(doc any, patch []operation) (any, error) {
	var err error
	for _, op := range patch {
		var value any
		if op.Value != nil {
			if value, err = decodeAny(op.Value); err != nil {
				return nil, err
			}
		}
		switch op.Op {
		case "add":
			doc, err = refAdd(doc, op.path, value)
		case "remove":
			doc, err = refRemove(doc, op.path)
		case "replace":
			if _, ok := refGet(doc, op.path); !ok {
				return nil, fmt.Errorf("%w: replace: missing target", ErrBadPatch)
			}
			if len(op.path) > 0 {
				doc, err = refRemove(doc, op.path)
			}
			if err == nil {
				doc, err = refAdd(doc, op.path, value)
			}
		case "move", "copy":
			v, ok := refGet(doc, op.from)
			if !ok {
				return nil, fmt.Errorf("%w: %s: missing from", ErrBadPatch, op.Op)
			}
			if op.Op == "copy" {
				v = refCopy(v)
			} else if len(op.from) > 0 {
				if doc, err = refRemove(doc, op.from); err != nil {
					return nil, err
				}
			}
			doc, err = refAdd(doc, op.path, v)
		case "test":
			v, ok := refGet(doc, op.path)
			if !ok {
				return nil, fmt.Errorf("%w: test: missing target", ErrBadPatch)
			}
			if !valuesEqual(v, value) {
				return nil, ErrTestFailed
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return doc, nil
}

func refGet(doc any, tokens []string) (any, bool) {
	for _, t := range tokens {
		switch d := doc.(type) {
		case map[string]any:
			v, ok := d[t]
			if !ok {
				return nil, false
			}
			doc = v
		case []any:
			i, ok := arrayIndex(t, len(d))
			if !ok {
				return nil, false
			}
			doc = d[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// refSet replaces the existing value at tokens with v.
func refSet(doc any, tokens []string, v any) any {
	if len(tokens) == 0 {
		return v
	}
	parent, _ := refGet(doc, tokens[:len(tokens)-1])
	last := tokens[len(tokens)-1]
	switch p := parent.(type) {
	case map[string]any:
		p[last] = v
	case []any:
		i, _ := arrayIndex(last, len(p))
		p[i] = v
	}
	return doc
}

func refAdd(doc any, tokens []string, v any) (any, error) {
	if len(tokens) == 0 {
		if _, ok := v.(map[string]any); !ok {
			if _, ok := v.([]any); !ok {
				return nil, fmt.Errorf("%w: scalar root", ErrBadPatch)
			}
		}
		return v, nil
	}
	parentPath, last := tokens[:len(tokens)-1], tokens[len(tokens)-1]
	parent, ok := refGet(doc, parentPath)
	if !ok {
		return nil, fmt.Errorf("%w: add: missing parent", ErrBadPatch)
	}
	switch p := parent.(type) {
	case map[string]any:
		p[last] = v
		return doc, nil
	case []any:
		i := len(p)
		if last != "-" {
			if i, ok = arrayIndex(last, len(p)+1); !ok {
				return nil, fmt.Errorf("%w: add: bad index", ErrBadPatch)
			}
		}
		return refSet(doc, parentPath, slices.Insert(slices.Clone(p), i, v)), nil
	}
	return nil, fmt.Errorf("%w: add: parent is a scalar", ErrBadPatch)
}

func refRemove(doc any, tokens []string) (any, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: remove root", ErrBadPatch)
	}
	parentPath, last := tokens[:len(tokens)-1], tokens[len(tokens)-1]
	parent, _ := refGet(doc, parentPath)
	switch p := parent.(type) {
	case map[string]any:
		if _, ok := p[last]; ok {
			delete(p, last)
			return doc, nil
		}
	case []any:
		if i, ok := arrayIndex(last, len(p)); ok {
			return refSet(doc, parentPath, slices.Delete(slices.Clone(p), i, i+1)), nil
		}
	}
	return nil, fmt.Errorf("%w: remove: missing target", ErrBadPatch)
}

func refCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = refCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = refCopy(x)
		}
		return s
	}
	return v
}
