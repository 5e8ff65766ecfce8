package room

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// conformanceCase is one enabled record of the json-patch-tests suite.
type conformanceCase struct {
	Name     string
	Doc      json.RawMessage `json:"doc"`
	Patch    json.RawMessage `json:"patch"`
	Expected json.RawMessage `json:"expected"`
	Error    json.RawMessage `json:"error"` // present: the patch must fail
	Comment  string          `json:"comment"`
	Disabled bool            `json:"disabled"`
}

// loadConformance reads the enabled records of both conformance files,
// skipping disabled ones and those with only a comment.
func loadConformance(tb testing.TB) []conformanceCase {
	tb.Helper()
	var cases []conformanceCase
	for _, file := range []string{"tests.json", "spec_tests.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "json-patch-tests", file))
		if err != nil {
			tb.Fatal(err)
		}
		var records []conformanceCase
		if err := json.Unmarshal(b, &records); err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		for i, r := range records {
			if r.Disabled || r.Doc == nil || r.Patch == nil {
				continue
			}
			r.Name = fmt.Sprintf("%s#%d", strings.TrimSuffix(file, ".json"), i)
			if r.Comment != "" {
				r.Name += " " + r.Comment
			}
			cases = append(cases, r)
		}
	}
	return cases
}

// check reports how out and err differ from what the case expects.
func (c *conformanceCase) check(out []byte, err error) error {
	if c.Error != nil {
		if err == nil {
			return fmt.Errorf("want an error (%s), got %s", c.Error, out)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("unexpected error: %v", err)
	}
	want := c.Expected
	if want == nil {
		want = c.Doc // no "expected": the document is unchanged
	}
	if !semanticallyEqual(out, want) {
		return fmt.Errorf("got %s, want %s", out, want)
	}
	return nil
}

func semanticallyEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// bareLibraryApply is the library on its own, with ApplyPatch's options.
func bareLibraryApply(doc, ops []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		return nil, err
	}
	return p.ApplyWithOptions(doc, &jsonpatch.ApplyOptions{
		AccumulatedCopySizeLimit: DefaultMaxDocBytes,
	})
}

func TestJSONPatchConformance(t *testing.T) {
	cases := loadConformance(t)
	ran := 0
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			ran++
			out, err := ApplyPatch(c.Doc, c.Patch, Limits{})
			if e := c.check(out, err); e != nil {
				t.Fatalf("doc %s\npatch %s\n%v", c.Doc, c.Patch, e)
			}
			if err == nil && !isCompact(out) {
				t.Errorf("result is not compact JSON: %s", out)
			}
		})
	}
	t.Logf("ran %d conformance cases", ran)
	if ran < 100 {
		t.Errorf("only %d conformance cases ran; the files have 108 enabled", ran)
	}

	// Without ApplyPatch's validation the library fails some of the same
	// cases, so removing the validation would fail this test.
	var bare []string
	for _, c := range cases {
		if e := c.check(bareLibraryApply(c.Doc, c.Patch)); e != nil {
			bare = append(bare, fmt.Sprintf("%s: %v", c.Name, e))
		}
	}
	t.Logf("the bare library fails %d of %d cases:\n%s", len(bare), len(cases), strings.Join(bare, "\n"))
	if len(bare) == 0 {
		t.Error("the bare library passes every case: this suite no longer shows what the validation is for")
	}
}

func isCompact(b []byte) bool {
	var buf bytes.Buffer
	return json.Compact(&buf, b) == nil && bytes.Equal(buf.Bytes(), b)
}

// patchCase is a document, a patch and the expected result: a document
// (compared semantically) or an error wrapping a sentinel.
type patchCase struct {
	name, doc, ops string
	lim            Limits
	want           string // the expected document, if err is nil
	err            error
}

func runPatchCases(t *testing.T, cases []patchCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := []byte(c.doc)
			out, err := ApplyPatch(doc, []byte(c.ops), c.lim)
			if string(doc) != c.doc {
				t.Fatalf("input document modified: %s", doc)
			}
			if errors.Is(err, errRecovered) {
				t.Fatalf("recovered panic: %v", err)
			}
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("got %s, %v; want an error wrapping %q", out, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !semanticallyEqual(out, []byte(c.want)) {
				t.Fatalf("got %s, want %s", out, c.want)
			}
			if !isCompact(out) {
				t.Fatalf("result is not compact: %s", out)
			}
		})
	}
}

func TestApplyPatchLimits(t *testing.T) {
	small := Limits{MaxDocBytes: 100, MaxPatchOps: 3, MaxDepth: 4}
	big := `"` + strings.Repeat("x", 60) + `"`
	runPatchCases(t, []patchCase{
		{name: "ops at the limit", lim: small, doc: `{}`,
			ops:  `[{"op":"add","path":"/a","value":1},{"op":"add","path":"/b","value":2},{"op":"remove","path":"/a"}]`,
			want: `{"b":2}`},
		{name: "ops over the limit", lim: small, doc: `{}`,
			ops: `[{"op":"add","path":"/a","value":1},{"op":"add","path":"/b","value":2},{"op":"remove","path":"/a"},{"op":"remove","path":"/b"}]`,
			err: ErrTooLarge},
		{name: "default MaxPatchOps", doc: `{}`, ops: "[" + strings.Repeat(`{"op":"test","path":"","value":{}},`, DefaultMaxPatchOps) + `{"op":"test","path":"","value":{}}]`,
			err: ErrTooLarge},
		{name: "input document over MaxDocBytes", lim: small, doc: `{"a":` + big + `,"b":` + big + `}`, ops: `[]`,
			err: ErrTooLarge},
		{name: "add of a big value", lim: small, doc: `{"a":` + big + `}`, ops: `[{"op":"add","path":"/b","value":` + big + `}]`,
			err: ErrTooLarge},
		{name: "result at MaxDocBytes", lim: Limits{MaxDocBytes: len(`{"a":` + big + `}`)}, doc: `{}`,
			ops: `[{"op":"add","path":"/a","value":` + big + `}]`, want: `{"a":` + big + `}`},
		{name: "copy doubling", lim: Limits{MaxDocBytes: 1000}, doc: `{"a":` + big + `}`,
			ops: `[{"op":"copy","from":"/a","path":"/b"},{"op":"copy","from":"/b","path":"/c"},{"op":"copy","from":"/c","path":"/d"},` +
				`{"op":"add","path":"/x","value":[]},{"op":"copy","from":"","path":"/x/-"},{"op":"copy","from":"","path":"/x/-"},` +
				`{"op":"copy","from":"","path":"/x/-"},{"op":"copy","from":"","path":"/x/-"},{"op":"copy","from":"","path":"/x/-"}]`,
			err: ErrTooLarge},
		{name: "copy doubling of the root between tests", lim: Limits{MaxDocBytes: 1000}, doc: `{"s":` + big + `}`,
			ops: "[" + strings.Repeat(`{"op":"copy","from":"","path":"/a"},{"op":"test","path":"/s","value":`+big+`},{"op":"copy","from":"","path":"/b"},{"op":"test","path":"/s","value":`+big+`},`, 8) + `{"op":"test","path":"","value":{}}]`,
			err: ErrTooLarge},
		{name: "copy doubling within the library", lim: Limits{MaxDocBytes: 10000}, doc: `{"a":{"s":` + big + `}}`,
			ops: "[" + strings.Repeat(`{"op":"copy","from":"/a","path":"/a/b"},{"op":"copy","from":"/a/b","path":"/a/c"},`, 8) + `{"op":"remove","path":"/a"}]`,
			err: ErrTooLarge},
		{name: "value at MaxDepth", lim: small, doc: `{}`, ops: `[{"op":"replace","path":"","value":[[[{"x":1}]]]}]`,
			want: `[[[{"x":1}]]]`},
		{name: "value over MaxDepth", lim: small, doc: `{}`, ops: `[{"op":"add","path":"/a","value":[[[[{"x":1}]]]]}]`,
			err: ErrTooLarge},
		{name: "test value over MaxDepth", lim: small, doc: `{}`, ops: `[{"op":"test","path":"/a","value":[[[[[]]]]]}]`,
			err: ErrTooLarge},
		{name: "document over MaxDepth", lim: small, doc: `{"a":[[[{"b":1}]]]}`, ops: `[]`,
			err: ErrTooLarge},
		{name: "result over MaxDepth", lim: small, doc: `{"a":{"b":{}}}`, ops: `[{"op":"add","path":"/a/b/c","value":[[]]}]`,
			err: ErrTooLarge},
		{name: "result over MaxDepth by moves", lim: small, doc: `{"a":[[]],"b":[[]]}`, ops: `[{"op":"move","from":"/b","path":"/a/0/0"}]`,
			err: ErrTooLarge},
		{name: "result at MaxDepth", lim: small, doc: `{"a":{"b":{}}}`, ops: `[{"op":"add","path":"/a/b/c","value":[]}]`,
			want: `{"a":{"b":{"c":[]}}}`},
		{name: "pointer over MaxDepth", lim: small, doc: `{}`, ops: `[{"op":"remove","path":"/a/b/c/d/e"}]`,
			err: ErrTooLarge},
		{name: "strings do not count as nesting", lim: small, doc: `{"a":"[[[[[[{{{{"}`, ops: `[{"op":"add","path":"/b","value":"]]]]]]}}}}"}]`,
			want: `{"a":"[[[[[[{{{{","b":"]]]]]]}}}}"}`},
	})
}

func TestApplyPatchErrors(t *testing.T) {
	runPatchCases(t, []patchCase{
		// test
		{name: "test fails", doc: `{"a":1}`, ops: `[{"op":"test","path":"/a","value":2}]`, err: ErrTestFailed},
		{name: "test string vs number", doc: `{"a":1}`, ops: `[{"op":"test","path":"/a","value":"1"}]`, err: ErrTestFailed},
		{name: "test object vs array", doc: `{"a":{}}`, ops: `[{"op":"test","path":"/a","value":[]}]`, err: ErrTestFailed},
		{name: "test extra member", doc: `{"a":{"x":1}}`, ops: `[{"op":"test","path":"/a","value":{"x":1,"y":null}}]`, err: ErrTestFailed},
		{name: "test after a change", doc: `{"a":1}`, ops: `[{"op":"replace","path":"/a","value":2},{"op":"test","path":"/a","value":1}]`, err: ErrTestFailed},
		{name: "test null of a missing member", doc: `{"a":1}`, ops: `[{"op":"test","path":"/b","value":null}]`, err: ErrBadPatch},
		{name: "test of a missing index", doc: `[1]`, ops: `[{"op":"test","path":"/1","value":1}]`, err: ErrBadPatch},
		{name: "test of -", doc: `[1]`, ops: `[{"op":"test","path":"/-","value":1}]`, err: ErrBadPatch},
		{name: "test inside a scalar", doc: `{"a":1}`, ops: `[{"op":"test","path":"/a/b","value":null}]`, err: ErrBadPatch},
		{name: "test of an empty index", doc: `{"a":[1]}`, ops: `[{"op":"test","path":"/a/","value":null}]`, err: ErrBadPatch},

		// missing targets
		{name: "remove missing member", doc: `{"a":1}`, ops: `[{"op":"remove","path":"/b"}]`, err: ErrBadPatch},
		{name: "remove missing index", doc: `[1]`, ops: `[{"op":"remove","path":"/1"}]`, err: ErrBadPatch},
		{name: "replace missing member", doc: `{"a":1}`, ops: `[{"op":"replace","path":"/b","value":1}]`, err: ErrBadPatch},
		{name: "replace missing empty member", doc: `{"a":1}`, ops: `[{"op":"replace","path":"/","value":1}]`, err: ErrBadPatch},
		{name: "add to missing parent", doc: `{"a":1}`, ops: `[{"op":"add","path":"/b/c","value":1}]`, err: ErrBadPatch},
		{name: "add under empty member that is missing", doc: `{"a":1}`, ops: `[{"op":"add","path":"//x","value":1}]`, err: ErrBadPatch},
		{name: "add past the end", doc: `[1]`, ops: `[{"op":"add","path":"/2","value":1}]`, err: ErrBadPatch},
		{name: "move from missing", doc: `{"a":1}`, ops: `[{"op":"move","from":"/b","path":"/c"}]`, err: ErrBadPatch},
		{name: "move from missing to root", doc: `{"a":1}`, ops: `[{"op":"move","from":"/b","path":""}]`, err: ErrBadPatch},
		{name: "copy from missing empty member", doc: `{"a":{"b":1}}`, ops: `[{"op":"copy","from":"/a/","path":"/c"}]`, err: ErrBadPatch},

		// array indices
		{name: "leading zero remove", doc: `[1,2]`, ops: `[{"op":"remove","path":"/01"}]`, err: ErrBadPatch},
		{name: "leading zero add", doc: `[1,2]`, ops: `[{"op":"add","path":"/00","value":0}]`, err: ErrBadPatch},
		{name: "leading zero replace", doc: `{"a":[1,2]}`, ops: `[{"op":"replace","path":"/a/01","value":0}]`, err: ErrBadPatch},
		{name: "leading zero move", doc: `{"a":[1,2]}`, ops: `[{"op":"move","from":"/a/01","path":"/b"}]`, err: ErrBadPatch},
		{name: "leading zero copy target", doc: `{"a":[1,2]}`, ops: `[{"op":"copy","from":"/a/0","path":"/a/01"}]`, err: ErrBadPatch},
		{name: "leading zero as parent", doc: `[[1]]`, ops: `[{"op":"add","path":"/00/0","value":0}]`, err: ErrBadPatch},
		{name: "negative index", doc: `[1,2]`, ops: `[{"op":"remove","path":"/-1"}]`, err: ErrBadPatch},
		{name: "minus zero", doc: `[1,2]`, ops: `[{"op":"remove","path":"/-0"}]`, err: ErrBadPatch},
		{name: "plus sign", doc: `[1,2]`, ops: `[{"op":"replace","path":"/+1","value":0}]`, err: ErrBadPatch},
		{name: "dash for remove", doc: `[1,2]`, ops: `[{"op":"remove","path":"/-"}]`, err: ErrBadPatch},
		{name: "dash for replace", doc: `[1,2]`, ops: `[{"op":"replace","path":"/-","value":0}]`, err: ErrBadPatch},
		{name: "dash as from", doc: `[1,2]`, ops: `[{"op":"copy","from":"/-","path":"/0"}]`, err: ErrBadPatch},
		{name: "huge index", doc: `[1,2]`, ops: `[{"op":"add","path":"/99999999999999999999999","value":0}]`, err: ErrBadPatch},
		{name: "max int index", doc: `[1,2]`, ops: `[{"op":"add","path":"/9223372036854775807","value":0}]`, err: ErrBadPatch},
		{name: "empty index", doc: `[1,2]`, ops: `[{"op":"add","path":"/","value":0}]`, err: ErrBadPatch},
		{name: "member of an array", doc: `[1,2]`, ops: `[{"op":"add","path":"/a","value":0}]`, err: ErrBadPatch},

		// malformed patches
		{name: "patch is an object", doc: `{}`, ops: `{"op":"add","path":"/a","value":1}`, err: ErrBadPatch},
		{name: "patch is null", doc: `{}`, ops: `null`, err: ErrBadPatch},
		{name: "patch is empty", doc: `{}`, ops: ``, err: ErrBadPatch},
		{name: "patch is not JSON", doc: `{}`, ops: `[{"op":"add",}]`, err: ErrBadPatch},
		{name: "trailing data", doc: `{}`, ops: `[] []`, err: ErrBadPatch},
		{name: "operation is null", doc: `{}`, ops: `[null]`, err: ErrBadPatch},
		{name: "operation is a number", doc: `{}`, ops: `[1]`, err: ErrBadPatch},
		{name: "operation is an array", doc: `{}`, ops: `[[]]`, err: ErrBadPatch},
		{name: "unknown op", doc: `{}`, ops: `[{"op":"frob","path":"/a"}]`, err: ErrBadPatch},
		{name: "op in capitals", doc: `{}`, ops: `[{"op":"ADD","path":"/a","value":1}]`, err: ErrBadPatch},
		{name: "missing op", doc: `{}`, ops: `[{"path":"/a","value":1}]`, err: ErrBadPatch},
		{name: "op is null", doc: `{}`, ops: `[{"op":null,"path":"/a","value":1}]`, err: ErrBadPatch},
		{name: "op is a number", doc: `{}`, ops: `[{"op":1,"path":"/a","value":1}]`, err: ErrBadPatch},
		{name: "missing path", doc: `{}`, ops: `[{"op":"add","value":1}]`, err: ErrBadPatch},
		{name: "path is null", doc: `{}`, ops: `[{"op":"add","path":null,"value":1}]`, err: ErrBadPatch},
		{name: "path is an array", doc: `{}`, ops: `[{"op":"add","path":["a"],"value":1}]`, err: ErrBadPatch},
		{name: "path without slash", doc: `{"a":1}`, ops: `[{"op":"remove","path":"a"}]`, err: ErrBadPatch},
		{name: "bad ~ escape", doc: `{"a~2":1}`, ops: `[{"op":"remove","path":"/a~2"}]`, err: ErrBadPatch},
		{name: "trailing ~", doc: `{"a~":1}`, ops: `[{"op":"remove","path":"/a~"}]`, err: ErrBadPatch},
		{name: "missing value for add", doc: `{}`, ops: `[{"op":"add","path":"/a"}]`, err: ErrBadPatch},
		{name: "missing value for replace", doc: `{"a":1}`, ops: `[{"op":"replace","path":"/a"}]`, err: ErrBadPatch},
		{name: "missing value for test", doc: `{"a":null}`, ops: `[{"op":"test","path":"/a"}]`, err: ErrBadPatch},
		{name: "missing value for root test", doc: `{}`, ops: `[{"op":"test","path":""}]`, err: ErrBadPatch},
		{name: "missing from for move", doc: `{"a":1}`, ops: `[{"op":"move","path":"/b"}]`, err: ErrBadPatch},
		{name: "missing from for copy", doc: `{"a":1}`, ops: `[{"op":"copy","path":"/b"}]`, err: ErrBadPatch},
		{name: "from is null", doc: `{"a":1}`, ops: `[{"op":"copy","from":null,"path":"/b"}]`, err: ErrBadPatch},
		{name: "from without slash", doc: `{"a":1}`, ops: `[{"op":"copy","from":"a","path":"/b"}]`, err: ErrBadPatch},
		{name: "duplicate op member", doc: `{"a":1}`, ops: `[{"op":"remove","path":"/a","op":"add","value":1}]`, err: ErrBadPatch},
		{name: "duplicate path member", doc: `{"a":1}`, ops: `[{"op":"remove","path":"/a","path":"/b"}]`, err: ErrBadPatch},
		{name: "duplicate member in value", doc: `{}`, ops: `[{"op":"add","path":"/a","value":{"x":1,"x":2}}]`, err: ErrBadPatch},
		{name: "duplicate escaped member in nested value", doc: `{}`, ops: `[{"op":"add","path":"/a","value":[{"b":{"x":1,"\u0078":2}}]}]`, err: ErrBadPatch},
		{name: "move into own child", doc: `{"a":{"b":1}}`, ops: `[{"op":"move","from":"/a","path":"/a/c"}]`, err: ErrBadPatch},
		{name: "move root into child", doc: `{"a":{"b":1}}`, ops: `[{"op":"move","from":"","path":"/c"}]`, err: ErrBadPatch},
		{name: "remove root", doc: `{"a":1}`, ops: `[{"op":"remove","path":""}]`, err: ErrBadPatch},
		{name: "replace root with null", doc: `{"a":1}`, ops: `[{"op":"replace","path":"","value":null}]`, err: ErrBadPatch},
		{name: "add root as string", doc: `{"a":1}`, ops: `[{"op":"add","path":"","value":"x"}]`, err: ErrBadPatch},
		{name: "move scalar to root", doc: `{"a":1}`, ops: `[{"op":"move","from":"/a","path":""}]`, err: ErrBadPatch},

		// documents
		{name: "document not JSON", doc: `{"a":`, ops: `[]`, err: ErrBadPatch},
		{name: "document empty", doc: ``, ops: `[]`, err: ErrBadPatch},
		{name: "document scalar", doc: `"x"`, ops: `[]`, err: ErrBadPatch},
		{name: "document null", doc: `null`, ops: `[]`, err: ErrBadPatch},
	})
}

// TestApplyPatchSemantics covers RFC 6902 behaviour beyond the conformance
// suite, much of it where the bare library is wrong.
func TestApplyPatchSemantics(t *testing.T) {
	runPatchCases(t, []patchCase{
		{name: "empty patch", doc: `{"a":1}`, ops: `[]`, want: `{"a":1}`},
		{name: "test only", doc: `{"a":1}`, ops: `[{"op":"test","path":"/a","value":1}]`, want: `{"a":1}`},
		{name: "test arrays with null", doc: `{"a":[null,1,[null]]}`, ops: `[{"op":"test","path":"/a","value":[null,1,[null]]}]`, want: `{"a":[null,1,[null]]}`},
		{name: "test null element", doc: `[1]`, ops: `[{"op":"replace","path":"/0","value":null},{"op":"test","path":"/0","value":null},{"op":"test","path":"","value":[null]}]`, want: `[null]`},
		{name: "test numbers by value", doc: `{"a":1,"b":-0,"c":1.5e3,"d":[100]}`,
			ops:  `[{"op":"test","path":"/a","value":1.0},{"op":"test","path":"/a","value":10e-1},{"op":"test","path":"/b","value":0},{"op":"test","path":"/c","value":1500},{"op":"test","path":"/d","value":[1E2]}]`,
			want: `{"a":1,"b":-0,"c":1.5e3,"d":[100]}`},
		{name: "test number differs in last digit", doc: `{"a":9007199254740993}`, ops: `[{"op":"test","path":"/a","value":9007199254740992}]`, err: ErrTestFailed},
		{name: "test escaped strings", doc: `{"a":"\u00e9\n"}`, ops: `[{"op":"test","path":"/a","value":"é\u000a"}]`, want: `{"a":"é\n"}`},
		{name: "test whole document", doc: `{"a":[1,{"b":2}]}`, ops: `[{"op":"test","path":"","value":{"a":[1,{"b":2}]}}]`, want: `{"a":[1,{"b":2}]}`},
		{name: "test escaped member names", doc: `{"a/b":{"~":1}}`, ops: `[{"op":"test","path":"/a~1b/~0","value":1}]`, want: `{"a/b":{"~":1}}`},
		{name: "test escaped member in document", doc: `{"\u0061":1}`, ops: `[{"op":"test","path":"/a","value":1}]`, want: `{"a":1}`},

		{name: "empty member name", doc: `{"":{"":1},"a":2}`,
			ops:  `[{"op":"replace","path":"//","value":3},{"op":"copy","from":"/","path":"/b"},{"op":"move","from":"/a","path":"//~1"},{"op":"test","path":"//","value":3}]`,
			want: `{"":{"":3,"/":2},"b":{"":3}}`},
		{name: "add and remove empty member", doc: `{"a":1}`, ops: `[{"op":"add","path":"/","value":1},{"op":"test","path":"/","value":1},{"op":"remove","path":"/"}]`, want: `{"a":1}`},
		{name: "numeric-looking member names", doc: `{"01":1,"-1":2,"+1":3}`,
			ops:  `[{"op":"replace","path":"/01","value":4},{"op":"remove","path":"/-1"},{"op":"move","from":"/+1","path":"/00"},{"op":"test","path":"/00","value":3}]`,
			want: `{"01":4,"00":3}`},
		{name: "renaming keeps NUL member names", doc: `{"\u0000":1,"\u0000\u0000x":2,"":3}`,
			ops:  `[{"op":"remove","path":"/"},{"op":"add","path":"/\u0000\u0000\u0000","value":{"":4}}]`,
			want: `{"\u0000":1,"\u0000\u0000x":2,"\u0000\u0000\u0000":{"":4}}`},
		{name: "renaming with values and arrays", doc: `[{"":[1]}]`,
			ops:  `[{"op":"add","path":"/0//0","value":{"01":[]}},{"op":"test","path":"/0//0","value":{"01":[]}},{"op":"add","path":"/-","value":""}]`,
			want: `[{"":[{"01":[]},1]},""]`},

		{name: "move to the root", doc: `{"a":{"b":1}}`, ops: `[{"op":"move","from":"/a","path":""}]`, want: `{"b":1}`},
		{name: "copy to the root", doc: `{"a":[1]}`, ops: `[{"op":"add","path":"/a/-","value":2},{"op":"copy","from":"/a","path":""},{"op":"add","path":"/-","value":3}]`, want: `[1,2,3]`},
		{name: "copy the root after a change", doc: `{"a":1}`, ops: `[{"op":"replace","path":"/a","value":2},{"op":"copy","from":"","path":"/b"}]`, want: `{"a":2,"b":{"a":2}}`},
		{name: "move root to root", doc: `{"a":1}`, ops: `[{"op":"move","from":"","path":""}]`, want: `{"a":1}`},
		{name: "replace root", doc: `[1]`, ops: `[{"op":"replace","path":"","value":{"x":[]}},{"op":"add","path":"/x/-","value":1}]`, want: `{"x":[1]}`},

		{name: "append with -", doc: `{"a":[]}`, ops: `[{"op":"add","path":"/a/-","value":1},{"op":"add","path":"/a/-","value":2},{"op":"add","path":"/a/0","value":0}]`, want: `{"a":[0,1,2]}`},
		{name: "copy is deep", doc: `{"a":{"b":[1]}}`, ops: `[{"op":"copy","from":"/a","path":"/c"},{"op":"add","path":"/c/b/-","value":2}]`, want: `{"a":{"b":[1]},"c":{"b":[1,2]}}`},
		{name: "move within an array", doc: `[0,1,2,3]`, ops: `[{"op":"move","from":"/0","path":"/3"}]`, want: `[1,2,3,0]`},
		{name: "move a null", doc: `{"a":[null]}`, ops: `[{"op":"move","from":"/a/0","path":"/b"}]`, want: `{"a":[],"b":null}`},
		{name: "spurious members ignored", doc: `{}`, ops: `[{"op":"add","path":"/a","value":1,"from":7,"x":{"y":[]}},{"op":"remove","path":"/a","value":{"z":1,"z":2}}]`, want: `{}`},
		{name: "whitespace everywhere", doc: " \n{ \"a\" : [ 1 , { \"b\" : 2 } ] }\t", ops: " [ { \"op\" : \"add\" , \"path\" : \"/c\" , \"value\" : [ 3 ] } ] ",
			want: `{"a":[1,{"b":2}],"c":[3]}`},
		{name: "whitespace with an array document", doc: ` [1] `, ops: `[{"op":"add","path":"/-","value":2}]`, want: `[1,2]`},
	})
}

// TestApplyPatchOutputBytes pins exact bytes: compact, member order kept,
// no HTML escaping, numbers as written.
func TestApplyPatchOutputBytes(t *testing.T) {
	for _, c := range []struct{ doc, ops, want string }{
		{`{ "z" : 1, "a" : [ 1.50, 2e3 ] }`, `[]`, `{"z":1,"a":[1.50,2e3]}`},
		{`{ "z" : 1, "a" : [ 1.50, 2e3 ] }`, `[{"op":"test","path":"/z","value":1}]`, `{"z":1,"a":[1.50,2e3]}`},
		{`{ "z" : 1, "a" : { "y" : [ 1 ] } }`, `[{"op":"add","path":"/m","value":{ "q" : "<&>" }}]`, `{"z":1,"a":{"y":[1]},"m":{"q":"<&>"}}`},
		{`{"z":1,"a":2}`, `[{"op":"replace","path":"/z","value":3}]`, `{"z":3,"a":2}`},
		{`{"":1,"z":2}`, `[{"op":"replace","path":"/","value":"<"}]`, `{"":"<","z":2}`},
	} {
		out, err := ApplyPatch([]byte(c.doc), []byte(c.ops), Limits{})
		if err != nil || string(out) != c.want {
			t.Errorf("ApplyPatch(%s, %s) = %s, %v; want %s", c.doc, c.ops, out, err, c.want)
		}
	}
}

// libraryPanics lists documents and patches on which the bare library
// (v5.9.11) panics; all of them are in its "test" operation.
var libraryPanics = []struct{ doc, ops string }{
	{`{"a":[null]}`, `[{"op":"test","path":"/a","value":[null]}]`},                                          // nil element: patch.go:348
	{`{"a":[1]}`, `[{"op":"test","path":"/a","value":[null]}]`},                                             // patch.go:350
	{`{"a":[null]}`, `[{"op":"test","path":"/a","value":[1]}]`},                                             // patch.go:348
	{`{}`, `[{"op":"test","path":""}]`},                                                                     // missing value: patch.go:379
	{`[1]`, `[{"op":"test","path":""}]`},                                                                    // patch.go:416
	{`[1]`, `[{"op":"test","path":"","value":null}]`},                                                       // null parsed as an array: patch.go:420
	{`{"a":[[1]]}`, `[{"op":"test","path":"/a","value":[null]}]`},                                           // patch.go:416
	{`{"a":[1]}`, `[{"op":"replace","path":"/a/0","value":null},{"op":"test","path":"/a","value":[null]}]`}, // patch.go:416
}

func TestApplyPatchLibraryPanics(t *testing.T) {
	for _, c := range libraryPanics {
		if _, err := bareLibraryApply([]byte(c.doc), []byte(c.ops)); err == nil || !strings.HasPrefix(err.Error(), "panic:") {
			t.Errorf("the bare library no longer panics on %s %s (%v); update libraryPanics", c.doc, c.ops, err)
		}
		out, err := ApplyPatch([]byte(c.doc), []byte(c.ops), Limits{})
		if errors.Is(err, errRecovered) {
			t.Errorf("ApplyPatch(%s, %s) recovered a panic: %v", c.doc, c.ops, err)
		}
		if err != nil && !errors.Is(err, ErrBadPatch) && !errors.Is(err, ErrTestFailed) {
			t.Errorf("ApplyPatch(%s, %s) = %v, want nil, ErrBadPatch or ErrTestFailed", c.doc, c.ops, err)
		}
		t.Logf("%s %s -> %s, %v", c.doc, c.ops, out, err)
	}

	// ApplyPatch evaluates test itself, so the panics above never reach the
	// library. Hand one to the library directly to show that a panic in it
	// becomes ErrBadPatch.
	p := &patcher{lim: Limits{}.WithDefaults(), doc: []byte(`{"a":[null]}`), opts: &jsonpatch.ApplyOptions{}}
	p.batch = []libOp{{Op: "test", Path: "/a", Value: json.RawMessage(`[null]`)}}
	err := p.flush()
	if !errors.Is(err, ErrBadPatch) || !errors.Is(err, errRecovered) {
		t.Fatalf("flush of a panicking patch = %v, want a recovered ErrBadPatch", err)
	}
	t.Logf("library panic recovered as: %v", err)
}

func TestApplyPatchDoesNotModifyInput(t *testing.T) {
	doc := []byte(`{"a":[1,2,{"b":"c"}],"":{"01":[null]}, "d" : { } }`)
	docCopy := bytes.Clone(doc)
	for _, ops := range []string{
		`[{"op":"add","path":"/a/-","value":3},{"op":"remove","path":"/a/0"},{"op":"replace","path":"/a/1/b","value":"x"},{"op":"move","from":"/a/0","path":"/d/e"},{"op":"copy","from":"/d","path":"/f"}]`,
		`[{"op":"add","path":"//01/-","value":3},{"op":"remove","path":"/"}]`,
		`[{"op":"test","path":"/a/2","value":{"b":"c"}},{"op":"move","from":"/d","path":""}]`,
		`[{"op":"copy","from":"","path":"/x"},{"op":"test","path":"/x/a/0","value":1}]`,
		`[]`,
	} {
		opsBytes := []byte(ops)
		out, err := ApplyPatch(doc, opsBytes, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", ops, err)
		}
		if !bytes.Equal(doc, docCopy) || string(opsBytes) != ops {
			t.Fatalf("%s modified its input", ops)
		}
		// The result does not share memory with the input.
		for i := range out {
			out[i] = 'X'
		}
		if !bytes.Equal(doc, docCopy) {
			t.Fatalf("%s: the result aliases the input document", ops)
		}
	}
}

func TestApplyPatchDeterministic(t *testing.T) {
	doc := benchmarkDoc()
	ops := []byte(`[{"op":"add","path":"/meta/tags/-","value":{"k":"v","n":[1,2.50,null]}},{"op":"move","from":"/items/3","path":"/items/0"},` +
		`{"op":"copy","from":"/meta","path":"/meta2"},{"op":"test","path":"/meta2/tags/0","value":"t0"},{"op":"remove","path":"/items/1"},{"op":"add","path":"/","value":{"01":[]}}]`)
	first, err := ApplyPatch(doc, ops, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				out, err := ApplyPatch(doc, ops, Limits{})
				if err != nil || !bytes.Equal(out, first) {
					t.Errorf("differs: %v\n%s\n%s", err, out, first)
					return
				}
			}
		})
	}
	wg.Wait()
}

// benchmarkDoc returns a document of about 10 KB.
func benchmarkDoc() []byte {
	type item struct {
		ID    int      `json:"id"`
		Name  string   `json:"name"`
		Done  bool     `json:"done"`
		Tags  []string `json:"tags"`
		Score float64  `json:"score"`
	}
	doc := struct {
		Meta  map[string]any `json:"meta"`
		Items []item         `json:"items"`
	}{Meta: map[string]any{"title": "Board", "tags": []string{"t0", "t1"}, "n": 0}}
	for i := range 100 {
		doc.Items = append(doc.Items, item{ID: i, Name: fmt.Sprintf("item number %d", i), Tags: []string{"a", "b"}, Score: float64(i) / 3})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

func BenchmarkApplyPatch(b *testing.B) {
	doc := benchmarkDoc()
	ops := []byte(`[{"op":"replace","path":"/items/50/done","value":true},{"op":"add","path":"/meta/tags/-","value":"t2"},{"op":"test","path":"/meta/title","value":"Board"}]`)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ApplyPatch(doc, ops, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
