package rtcdc

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// pieceRecorder is the writing side of a DataChannel that keeps its pieces.
type pieceRecorder struct {
	pieces  [][]byte
	strings []bool
}

func (r *pieceRecorder) WriteDataChannel(p []byte, isString bool) (int, error) {
	r.pieces = append(r.pieces, append([]byte(nil), p...))
	r.strings = append(r.strings, isString)
	return len(p), nil
}

// A large message is cut on character boundaries: the final string piece,
// decoded alone by a browser, must be valid UTF-8.
func TestPiecesCutOnCharacters(t *testing.T) {
	for shift := 0; shift < 4; shift++ {
		msg := []byte(strings.Repeat("a", shift) + strings.Repeat("é€😀", 20000))
		var r pieceRecorder
		if err := writePieces(&r, msg, 64<<10); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.Join(r.pieces, nil), msg) {
			t.Fatalf("shift %d: pieces do not add up to the message", shift)
		}
		for i, p := range r.pieces {
			if len(p) > 64<<10 || !utf8.Valid(p) || r.strings[i] != (i == len(r.pieces)-1) {
				t.Fatalf("shift %d: piece %d: %d bytes, valid UTF-8 %v, string %v", shift, i, len(p), utf8.Valid(p), r.strings[i])
			}
		}
	}
}
