package room

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// How ApplyPatch uses github.com/evanphx/json-patch/v5.
//
// The library applies add, remove, replace, move and copy well, but it
// deviates from RFC 6901/6902 in ways that matter for a shared document,
// and it panics on some inputs. ApplyPatch therefore:
//
//   - parses and validates the operations itself (every member has the
//     right type, required members are present, pointers are well formed,
//     values have no duplicate member names, limits hold), then hands the
//     library a re-encoded, normalized patch;
//   - evaluates "test" itself. The library's test panics on arrays holding
//     null, lets a null value match a missing member, misreads the pointer
//     "/" (it returns the whole document for the empty member name), accepts
//     array indices with leading zeros or a sign, and compares numbers by
//     their text. Each test therefore ends a run of library operations: the
//     run is applied, and the test is evaluated on the resulting bytes;
//   - applies move and copy whose "path" is the root, and copy whose
//     "from" is the root, itself (the library adds a member named "" or
//     copies a stale document), and rejects remove of the root;
//   - renames object members around the library when a non-test operation
//     uses a reference token the library mishandles (see keyRenamer);
//   - recovers from panics, and checks sizes and nesting depth.

// Default values of the Limits fields.
const (
	DefaultMaxDocBytes = 1 << 20
	DefaultMaxPatchOps = 1000
	DefaultMaxDepth    = 64
)

// Limits bounds what one patch may do to a room document. Zero (or
// negative) fields mean the documented default.
type Limits struct {
	MaxDocBytes int // largest document after a patch, in bytes of compact JSON; default 1 MiB
	MaxPatchOps int // most operations in one patch; default 1000
	MaxDepth    int // deepest JSON nesting of the document and of any operation value; default 64
}

// WithDefaults returns l with zero (or negative) fields replaced by the
// defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxDocBytes <= 0 {
		l.MaxDocBytes = DefaultMaxDocBytes
	}
	if l.MaxPatchOps <= 0 {
		l.MaxPatchOps = DefaultMaxPatchOps
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// errRecovered marks errors made from a recovered panic. It wraps
// ErrBadPatch; tests and the fuzz target use it to tell such errors apart.
var errRecovered = fmt.Errorf("%w: patch engine panicked", ErrBadPatch)

// ApplyPatch applies the RFC 6902 patch ops (a JSON array of operations) to
// doc (a JSON object or array) and returns the new document as compact JSON.
// The result depends only on the arguments, so replicas that apply the same
// patch to the same document get byte-identical results. ApplyPatch never
// panics and never modifies doc.
//
// Errors wrap one of:
//   - ErrBadPatch: ops is not an array of operation objects, an operation is
//     unknown or lacks "path", "from" or "value", a member has the wrong type
//     or appears twice, a pointer is malformed, a target does not exist, an
//     array index is not canonical ("01", "-1", "+1") or out of range, a move
//     has "from" a proper prefix of "path", the root would be removed or
//     become a scalar, or doc is not a JSON object or array;
//   - ErrTestFailed: a test operation's value differs from its target
//     (numbers are compared by value: 1, 1.0 and 1e0 are equal);
//   - ErrTooLarge: doc or the result is over lim.MaxDocBytes, ops has more
//     than lim.MaxPatchOps operations, or doc, an operation value, a pointer
//     or the result is nested deeper than lim.MaxDepth.
func ApplyPatch(doc, ops []byte, lim Limits) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("%w: %v", errRecovered, r)
		}
	}()
	lim = lim.WithDefaults()

	doc = trimSpace(doc)
	if len(doc) > lim.MaxDocBytes {
		return nil, fmt.Errorf("%w: document is %d bytes, over the limit of %d (MaxDocBytes)", ErrTooLarge, len(doc), lim.MaxDocBytes)
	}
	if !json.Valid(doc) {
		return nil, fmt.Errorf("%w: document is not valid JSON", ErrBadPatch)
	}
	if doc[0] != '{' && doc[0] != '[' {
		return nil, fmt.Errorf("%w: document must be a JSON object or array", ErrBadPatch)
	}
	if d, _, _ := scanJSON(doc, false); d > lim.MaxDepth {
		return nil, fmt.Errorf("%w: document nesting depth %d is over the limit of %d (MaxDepth)", ErrTooLarge, d, lim.MaxDepth)
	}
	patch, err := parsePatch(ops, lim)
	if err != nil {
		return nil, err
	}

	p := &patcher{
		lim: lim,
		// The library keeps slices of the document it is given. A copy
		// guarantees that the caller's bytes are never written to and
		// that the result never shares memory with them.
		doc: bytes.Clone(doc),
		opts: &jsonpatch.ApplyOptions{
			SupportNegativeIndices:   false,
			AccumulatedCopySizeLimit: int64(lim.MaxDocBytes),
			AllowMissingPathOnRemove: false,
			EnsurePathExistsOnAdd:    false,
			EscapeHTML:               false,
		},
	}
	var rn *keyRenamer
	if needsRenaming(patch) {
		if rn, err = newKeyRenamer(p.doc, patch); err != nil {
			return nil, err
		}
		if p.doc, err = rn.apply(p.doc, patch); err != nil {
			return nil, err
		}
		p.compact = true
	}
	for i := range patch {
		if err = p.do(i, &patch[i]); err != nil {
			break
		}
	}
	if err == nil {
		err = p.flush()
	}
	if err != nil {
		if rn != nil {
			err = &renamedError{err, rn.prefix}
		}
		return nil, err
	}
	out = p.doc
	if rn != nil {
		if out, err = rewriteKeys(out, rn.restore); err != nil {
			return nil, err
		}
	} else if !p.compact {
		var buf bytes.Buffer
		if err := json.Compact(&buf, out); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPatch, err)
		}
		out = buf.Bytes()
	}

	if len(out) > lim.MaxDocBytes {
		return nil, fmt.Errorf("%w: patched document would be %d bytes, over the limit of %d (MaxDocBytes)", ErrTooLarge, len(out), lim.MaxDocBytes)
	}
	if d, _, _ := scanJSON(out, false); d > lim.MaxDepth {
		return nil, fmt.Errorf("%w: patched document nesting depth %d is over the limit of %d (MaxDepth)", ErrTooLarge, d, lim.MaxDepth)
	}
	return out, nil
}

// operation is one validated RFC 6902 operation.
type operation struct {
	Op    string          // add, remove, replace, move, copy or test
	Path  string          // the "path" pointer as sent
	From  string          // the "from" pointer as sent; move and copy only
	Value json.RawMessage // the "value"; add, replace and test only

	path, from []string // the decoded reference tokens of Path and From
}

// parsePatch decodes and validates ops, a JSON array of operations.
func parsePatch(ops []byte, lim Limits) ([]operation, error) {
	ops = trimSpace(ops)
	if !json.Valid(ops) {
		return nil, fmt.Errorf("%w: patch is not valid JSON", ErrBadPatch)
	}
	if len(ops) == 0 || ops[0] != '[' {
		return nil, fmt.Errorf("%w: patch must be a JSON array of operations", ErrBadPatch)
	}
	dec := json.NewDecoder(bytes.NewReader(ops))
	if _, err := dec.Token(); err != nil { // [
		return nil, fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	var patch []operation
	for dec.More() {
		i := len(patch)
		if i == lim.MaxPatchOps {
			return nil, fmt.Errorf("%w: patch has more than %d operations (MaxPatchOps)", ErrTooLarge, lim.MaxPatchOps)
		}
		op, err := decodeOperation(dec, lim)
		if err == nil {
			err = op.validate(lim)
		}
		if err != nil {
			return nil, fmt.Errorf("operation %d: %w", i, err)
		}
		patch = append(patch, op)
	}
	return patch, nil
}

// decodeOperation reads one operation object from dec.
func decodeOperation(dec *json.Decoder, lim Limits) (operation, error) {
	var op operation
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return op, fmt.Errorf("%w: not a JSON object", ErrBadPatch)
	}
	members := make(map[string]json.RawMessage, 4)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return op, fmt.Errorf("%w: %v", ErrBadPatch, err)
		}
		name := t.(string) // object keys are always strings
		if _, dup := members[name]; dup {
			return op, fmt.Errorf("%w: member %q appears twice", ErrBadPatch, name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return op, fmt.Errorf("%w: %v", ErrBadPatch, err)
		}
		members[name] = raw
	}
	if _, err := dec.Token(); err != nil { // }
		return op, fmt.Errorf("%w: %v", ErrBadPatch, err)
	}

	if err := decodeString(members, "op", &op.Op); err != nil {
		return op, err
	}
	if err := decodeString(members, "path", &op.Path); err != nil {
		return op, err
	}
	// RFC 6902 section 4: members not defined for the operation are ignored.
	switch op.Op {
	case "move", "copy":
		if err := decodeString(members, "from", &op.From); err != nil {
			return op, err
		}
	case "add", "replace", "test":
		v, ok := members["value"]
		v = trimSpace(v)
		if !ok {
			return op, fmt.Errorf(`%w: missing "value"`, ErrBadPatch)
		}
		if depth, dup, ok := scanJSON(v, true); depth > lim.MaxDepth {
			return op, fmt.Errorf("%w: value nesting depth %d is over the limit of %d (MaxDepth)", ErrTooLarge, depth, lim.MaxDepth)
		} else if ok {
			return op, fmt.Errorf("%w: value has an object with member %q twice", ErrBadPatch, dup)
		}
		op.Value = v
	}
	return op, nil
}

// decodeString decodes the member name, which must be present and a JSON
// string, into s.
func decodeString(members map[string]json.RawMessage, name string, s *string) error {
	raw, ok := members[name]
	if !ok {
		return fmt.Errorf("%w: missing %q", ErrBadPatch, name)
	}
	if raw[0] != '"' {
		return fmt.Errorf("%w: %q must be a string", ErrBadPatch, name)
	}
	if err := json.Unmarshal(raw, s); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrBadPatch, name, err)
	}
	return nil
}

// validate checks the semantics of a decoded operation and decodes its
// pointers.
func (op *operation) validate(lim Limits) error {
	var err error
	if op.path, err = parsePointer(op.Path, lim); err != nil {
		return fmt.Errorf(`"path": %w`, err)
	}
	switch op.Op {
	case "add", "replace", "test":
		if len(op.path) == 0 && op.Op != "test" && op.Value[0] != '{' && op.Value[0] != '[' {
			return fmt.Errorf("%w: the document root must stay a JSON object or array", ErrBadPatch)
		}
	case "remove":
		if len(op.path) == 0 {
			return fmt.Errorf("%w: cannot remove the document root", ErrBadPatch)
		}
	case "move", "copy":
		if op.from, err = parsePointer(op.From, lim); err != nil {
			return fmt.Errorf(`"from": %w`, err)
		}
		if op.Op == "move" && isProperPrefix(op.from, op.path) {
			return fmt.Errorf(`%w: cannot move %q into its own child %q`, ErrBadPatch, op.From, op.Path)
		}
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadPatch, op.Op)
	}
	return nil
}

// parsePointer decodes an RFC 6901 JSON Pointer into its reference tokens.
// The root "" has none; "/" has one, the empty member name.
func parsePointer(s string, lim Limits) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if s[0] != '/' {
		return nil, fmt.Errorf("%w: JSON pointer %q does not start with \"/\"", ErrBadPatch, s)
	}
	if n := strings.Count(s, "/"); n > lim.MaxDepth {
		return nil, fmt.Errorf("%w: JSON pointer has %d reference tokens, over the limit of %d (MaxDepth)", ErrTooLarge, n, lim.MaxDepth)
	}
	tokens := strings.Split(s[1:], "/")
	for i, t := range tokens {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 == len(t) || t[j+1] != '0' && t[j+1] != '1') {
				return nil, fmt.Errorf("%w: JSON pointer %q has \"~\" not followed by 0 or 1", ErrBadPatch, s)
			}
		}
		tokens[i] = pointerUnescaper.Replace(t)
	}
	return tokens, nil
}

var (
	pointerUnescaper = strings.NewReplacer("~1", "/", "~0", "~")
	pointerEscaper   = strings.NewReplacer("~", "~0", "/", "~1")
)

// encodePointer is the inverse of parsePointer.
func encodePointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(pointerEscaper.Replace(t))
	}
	return b.String()
}

// isProperPrefix reports whether the pointer a is a proper prefix of b.
func isProperPrefix(a, b []string) bool {
	if len(a) >= len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// arrayIndex parses a reference token as an index into an array of n
// elements: canonical decimal ("0" or no leading zero), no sign, below n.
func arrayIndex(t string, n int) (int, bool) {
	if t == "" || len(t) > 1 && t[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(t); i++ {
		if t[i] < '0' || t[i] > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(t)
	return i, err == nil && i < n
}

// patcher applies a validated patch. Runs of operations go to the library;
// what the library gets wrong is done here, between runs, on the bytes.
type patcher struct {
	lim     Limits
	opts    *jsonpatch.ApplyOptions
	doc     []byte       // the document as of the last flush
	compact bool         // doc is known to be compact JSON
	batch   []libOp      // operations waiting for the library
	first   int          // the index in the patch of batch[0]
	enc     bytes.Buffer // reused to encode batch
}

// libOp is an operation as handed to the library.
type libOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  *string         `json:"from,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

// do applies op, operation i of the patch, or queues it for the library.
func (p *patcher) do(i int, op *operation) error {
	if op.Op == "test" || len(op.path) == 0 && (op.Op == "move" || op.Op == "copy") || op.Op == "copy" && len(op.from) == 0 {
		// Done here, on the document as the operations before left it.
		if err := p.flush(); err != nil {
			return err
		}
		p.first = i // in case doHere queues an operation
		if err := p.doHere(op); err != nil {
			return fmt.Errorf("operation %d (%s): %w", i, op.Op, err)
		}
		return nil
	}
	if len(p.batch) == 0 {
		p.first = i
	}
	l := libOp{Op: op.Op, Path: op.Path, Value: op.Value}
	if op.Op == "move" || op.Op == "copy" {
		l.From = &op.From
	}
	p.batch = append(p.batch, l)
	return nil
}

// doHere does the operations that the library gets wrong.
func (p *patcher) doHere(op *operation) error {
	switch {
	case op.Op == "test":
		return testValue(p.doc, op)
	case (op.Op == "move" || op.Op == "copy") && len(op.path) == 0:
		// The value at "from" becomes the whole document (for move, the
		// removal of "from" is moot). The library would add a member "".
		v, err := lookup(p.doc, op.from)
		if err != nil {
			return err
		}
		if v[0] != '{' && v[0] != '[' {
			return fmt.Errorf("%w: the document root must stay a JSON object or array", ErrBadPatch)
		}
		p.doc = v // a sub-slice of compact JSON is compact
		return nil
	default: // copy from the root
		// The library would copy the document as it was before the patch,
		// so add the current document instead. The flush that applies it
		// bounds its size.
		p.batch = append(p.batch, libOp{Op: "add", Path: op.Path, Value: p.doc})
		return nil
	}
}

// flush applies the queued operations with the library.
func (p *patcher) flush() (err error) {
	if len(p.batch) == 0 {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: in json-patch: %v", errRecovered, r)
		}
		if err != nil {
			if last := p.first + len(p.batch) - 1; last > p.first {
				err = fmt.Errorf("operations %d to %d: %w", p.first, last, err)
			} else {
				err = fmt.Errorf("operation %d: %w", p.first, err)
			}
		}
		clear(p.batch) // drop references to values
		p.batch = p.batch[:0]
	}()
	p.enc.Reset()
	enc := json.NewEncoder(&p.enc)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p.batch); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	patch, err := jsonpatch.DecodePatch(p.enc.Bytes())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	out, err := patch.ApplyWithOptions(p.doc, p.opts)
	if err != nil {
		var size *jsonpatch.AccumulatedCopySizeError
		if errors.As(err, &size) {
			return fmt.Errorf("%w: copy operations add more than %d bytes (MaxDocBytes)", ErrTooLarge, p.lim.MaxDocBytes)
		}
		return fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	if len(out) > p.lim.MaxDocBytes {
		return fmt.Errorf("%w: patched document would be %d bytes, over the limit of %d (MaxDocBytes)", ErrTooLarge, len(out), p.lim.MaxDocBytes)
	}
	p.doc, p.compact = out, true
	return nil
}

// testValue evaluates a test operation against doc.
func testValue(doc []byte, op *operation) error {
	target, err := lookup(doc, op.path)
	if err != nil {
		return err
	}
	eq, err := jsonEqual(target, op.Value)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	if !eq {
		return fmt.Errorf("%w: the value at %q differs", ErrTestFailed, op.Path)
	}
	return nil
}

// lookup returns the value the pointer tokens refer to in doc, which must be
// valid JSON.
func lookup(doc []byte, tokens []string) ([]byte, error) {
	v := trimSpace(doc)
	for n, t := range tokens {
		var ok bool
		switch v[0] {
		case '{':
			v, ok = objectMember(v, t)
		case '[':
			v, ok = arrayElement(v, t)
		}
		if !ok {
			return nil, fmt.Errorf("%w: path %q does not exist", ErrBadPatch, encodePointer(tokens[:n+1]))
		}
	}
	return v, nil
}

// objectMember returns the value of the member called name of obj, a valid
// JSON object.
func objectMember(obj []byte, name string) ([]byte, bool) {
	for i := 1; ; {
		i = skipSpace(obj, i)
		if obj[i] != '"' {
			return nil, false // "}"
		}
		keyEnd := stringEnd(obj, i)
		key := obj[i:keyEnd]
		i = skipSpace(obj, skipSpace(obj, keyEnd)+1) // past ":"
		valEnd := valueEnd(obj, i)
		if keyEquals(key, name) {
			return obj[i:valEnd], true
		}
		i = skipSpace(obj, valEnd)
		if obj[i] != ',' {
			return nil, false
		}
		i++
	}
}

// arrayElement returns the element of arr, a valid JSON array, that the
// reference token t refers to.
func arrayElement(arr []byte, t string) ([]byte, bool) {
	idx, ok := arrayIndex(t, len(arr)) // an array has fewer elements than bytes
	if !ok {
		return nil, false
	}
	i := skipSpace(arr, 1)
	if arr[i] == ']' {
		return nil, false
	}
	for n := 0; ; n++ {
		end := valueEnd(arr, i)
		if n == idx {
			return arr[i:end], true
		}
		i = skipSpace(arr, end)
		if arr[i] != ',' {
			return nil, false
		}
		i = skipSpace(arr, i+1)
	}
}

// keyEquals reports whether the quoted JSON string key decodes to name.
func keyEquals(key []byte, name string) bool {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner) == name // no allocation
	}
	return decodeKey(key) == name
}

// decodeKey decodes the valid quoted JSON string key as encoding/json (and
// the library) does: escapes resolved, invalid UTF-8 replaced by U+FFFD.
func decodeKey(key []byte) string {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var s string
	_ = json.Unmarshal(key, &s) // valid JSON string
	return s
}

// jsonEqual reports whether two valid JSON values are equal in the sense of
// RFC 6902 section 4.6: same type; numbers equal in value; strings equal
// after decoding; objects with the same members regardless of order; arrays
// equal element by element.
func jsonEqual(a, b []byte) (bool, error) {
	if bytes.Equal(a, b) {
		return true, nil
	}
	x, err := decodeAny(a)
	if err != nil {
		return false, err
	}
	y, err := decodeAny(b)
	if err != nil {
		return false, err
	}
	return valuesEqual(x, y), nil
}

func decodeAny(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func valuesEqual(x, y any) bool {
	switch x := x.(type) {
	case map[string]any:
		y, ok := y.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !valuesEqual(xv, yv) {
				return false
			}
		}
		return true
	case []any:
		y, ok := y.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !valuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := y.(json.Number)
		return ok && numbersEqual(string(x), string(y))
	default: // string, bool, nil
		return x == y
	}
}

// numbersEqual reports whether two valid JSON numbers have the same value,
// exactly (no rounding to float64).
func numbersEqual(x, y string) bool {
	if x == y {
		return true
	}
	xneg, xdigits, xexp := decimal(x)
	yneg, ydigits, yexp := decimal(y)
	if xdigits == "" || ydigits == "" { // zero, whatever its sign
		return xdigits == ydigits
	}
	return xneg == yneg && xdigits == ydigits && xexp.Cmp(yexp) == 0
}

// decimal writes the valid JSON number s as ±0.digits × 10^exp, digits
// having neither leading nor trailing zeros (empty for zero).
func decimal(s string) (neg bool, digits string, exp *big.Int) {
	if neg = s[0] == '-'; neg {
		s = s[1:]
	}
	mant, e, _ := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	all := intPart + frac
	digits = strings.TrimLeft(all, "0")
	shift := int64(len(intPart) - (len(all) - len(digits)))
	digits = strings.TrimRight(digits, "0")
	exp = big.NewInt(shift)
	if e != "" {
		var ev big.Int
		ev.SetString(e, 10) // valid: optional sign, then digits
		exp.Add(exp, &ev)
	}
	return neg, digits, exp
}

// needsRenaming reports whether an operation other than test (which
// ApplyPatch evaluates itself) has a reference token the library mishandles.
func needsRenaming(patch []operation) bool {
	for i := range patch {
		if patch[i].Op == "test" {
			continue
		}
		for _, t := range patch[i].path {
			if isMishandledToken(t) {
				return true
			}
		}
		for _, t := range patch[i].from {
			if isMishandledToken(t) {
				return true
			}
		}
	}
	return false
}

// isMishandledToken reports whether the library gets the reference token t
// wrong: the empty member name (its lookup of "" returns the container
// itself), or a non-canonical integer such as "01", "+1" or "-0" (it parses
// array indices with strconv.Atoi, so it accepts these as indices).
func isMishandledToken(t string) bool {
	if t == "" {
		return true
	}
	if _, err := strconv.Atoi(t); err != nil {
		return false
	}
	_, canonical := arrayIndex(t, int(^uint(0)>>1))
	return !canonical
}

// keyRenamer works around the tokens of isMishandledToken. Every object
// member name that is such a token is renamed, in the document, in the
// values and in the pointers, to prefix+name, where the prefix is a run of
// NUL bytes longer than any run that starts a member name or token of the
// input. The renamed names are not integers, so the library treats them
// only as member names (and as invalid array indices, which they are), and
// renaming is undone on the result. Only patches that use such tokens pay
// for the rewriting.
type keyRenamer struct{ prefix string }

func newKeyRenamer(doc []byte, patch []operation) (*keyRenamer, error) {
	longest := 0
	observe := func(s string) string {
		n := len(s) - len(strings.TrimLeft(s, "\x00"))
		longest = max(longest, n)
		return s
	}
	if _, err := rewriteKeys(doc, observe); err != nil {
		return nil, err
	}
	for i := range patch {
		op := &patch[i]
		if op.Value != nil {
			if _, err := rewriteKeys(op.Value, observe); err != nil {
				return nil, err
			}
		}
		for _, t := range op.path {
			observe(t)
		}
		for _, t := range op.from {
			observe(t)
		}
	}
	return &keyRenamer{prefix: strings.Repeat("\x00", longest+1)}, nil
}

func (r *keyRenamer) rename(name string) string {
	if isMishandledToken(name) {
		return r.prefix + name
	}
	return name
}

func (r *keyRenamer) restore(name string) string {
	return strings.TrimPrefix(name, r.prefix)
}

// apply renames the member names of doc and of the values and pointers of
// patch, in place, and returns the renamed document.
func (r *keyRenamer) apply(doc []byte, patch []operation) ([]byte, error) {
	for i := range patch {
		op := &patch[i]
		if op.Value != nil {
			v, err := rewriteKeys(op.Value, r.rename)
			if err != nil {
				return nil, err
			}
			op.Value = v
		}
		for j, t := range op.path {
			op.path[j] = r.rename(t)
		}
		for j, t := range op.from {
			op.from[j] = r.rename(t)
		}
		op.Path, op.From = encodePointer(op.path), encodePointer(op.from)
	}
	return rewriteKeys(doc, r.rename)
}

// renamedError is an error from a renamed patch: its message shows the
// names as sent.
type renamedError struct {
	err    error
	prefix string
}

func (e *renamedError) Error() string { return strings.ReplaceAll(e.err.Error(), e.prefix, "") }
func (e *renamedError) Unwrap() error { return e.err }

// rewriteKeys re-encodes the valid JSON value b compactly with every object
// member name k replaced by f(k). Numbers keep their text.
func rewriteKeys(b []byte, f func(string) string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	type frame struct {
		object, first, key bool // key: the next string is a member name
	}
	stack := []frame{{first: true}}
	for {
		t, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPatch, err)
		}
		top := &stack[len(stack)-1]
		if d, ok := t.(json.Delim); ok && (d == '}' || d == ']') {
			out.WriteByte(byte(d))
			stack = stack[:len(stack)-1]
			continue
		}
		if top.object && top.key {
			if !top.first {
				out.WriteByte(',')
			}
			top.first, top.key = false, false
			name := f(t.(string))
			writeJSON(enc, &out, name)
			out.WriteByte(':')
			continue
		}
		if !top.object {
			if !top.first {
				out.WriteByte(',')
			}
			top.first = false
		}
		top.key = true
		switch t := t.(type) {
		case json.Delim: // { or [
			out.WriteByte(byte(t))
			stack = append(stack, frame{object: t == '{', first: true, key: true})
		case json.Number:
			out.WriteString(string(t))
		default: // string, bool, nil
			writeJSON(enc, &out, t)
		}
	}
	return out.Bytes(), nil
}

// writeJSON encodes v with enc, which writes to out, without the newline
// that Encoder.Encode adds.
func writeJSON(enc *json.Encoder, out *bytes.Buffer, v any) {
	_ = enc.Encode(v) // strings, bools and nil always encode
	out.Truncate(out.Len() - 1)
}

// scanJSON walks the valid JSON value b and returns its nesting depth (0 for
// a scalar, 1 for a flat object or array). With keys set it also reports a
// member name that appears twice in one object.
func scanJSON(b []byte, keys bool) (depth int, dup string, hasDup bool) {
	type object map[string]bool
	var stack []object // one entry per open container; nil for arrays
	var last byte      // the last structural character
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{', '[':
			var o object
			if c == '{' && keys {
				o = object{}
			}
			stack = append(stack, o)
			depth = max(depth, len(stack))
			last = c
		case '}', ']':
			stack = stack[:len(stack)-1]
			last = c
		case ',', ':':
			last = c
		case '"':
			end := stringEnd(b, i)
			if keys && !hasDup && (last == '{' || last == ',') && len(stack) > 0 && stack[len(stack)-1] != nil {
				o, name := stack[len(stack)-1], decodeKey(b[i:end])
				if o[name] {
					dup, hasDup = name, true
				}
				o[name] = true
			}
			last = '"'
			i = end - 1
		}
	}
	return depth, dup, hasDup
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// trimSpace removes leading and trailing JSON whitespace.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string that starts at
// b[i] == '"'.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// valueEnd returns the index just past the JSON value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && !isSpace(b[i]) {
			i++
		}
		return i
	}
}
