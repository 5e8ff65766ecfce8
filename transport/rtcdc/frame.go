package rtcdc

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/pion/datachannel"
)

// ErrTooLarge is returned by a read of a message over the reader's limit.
var ErrTooLarge = errors.New("rtcdc: message over the size limit")

// The labels of the two DataChannels a client opens.
const (
	// LabelReliable is the reliable, ordered channel: hello and welcome,
	// every durable message, acks.
	LabelReliable = "roomwire"
	// LabelEphemeral is the unordered channel without retransmissions
	// (maxRetransmits 0): ephemeral messages only.
	LabelEphemeral = "roomwire-eph"
)

// writeMessage writes p as one logical message: if it is larger than
// chunk bytes it goes in pieces of chunk bytes, every piece but the last a
// binary DataChannel message and the last a string message; a message that
// fits is one string message.
func writeMessage(dc datachannel.ReadWriteCloser, p []byte, chunk int) error {
	return writePieces(dc, p, chunk)
}

// writePieces writes p as pieces of at most chunk bytes to w.
func writePieces(w interface {
	WriteDataChannel([]byte, bool) (int, error)
}, p []byte, chunk int) error {
	dc := w
	for len(p) > chunk {
		// Cut on a character boundary: the last piece is a string
		// message, which a browser decodes as UTF-8 on its own.
		cut := chunk
		for cut > chunk-utf8.UTFMax && !utf8.RuneStart(p[cut]) {
			cut--
		}
		if _, err := dc.WriteDataChannel(p[:cut], false); err != nil {
			return err
		}
		p = p[cut:]
	}
	_, err := dc.WriteDataChannel(p, true)
	return err
}

// msgReader reads logical messages (see writeMessage) of at most max bytes
// from one DataChannel. Not safe for concurrent use.
type msgReader struct {
	dc  datachannel.ReadWriteCloser
	max int
	buf []byte
	acc []byte
}

func newMsgReader(dc datachannel.ReadWriteCloser, max int) *msgReader {
	return &msgReader{dc: dc, max: max, buf: make([]byte, min(max, maxPiece)+1)}
}

// next returns the next logical message. The slice is valid until the next
// call. A message over the limit returns ErrTooLarge; the channel is then
// unusable.
func (r *msgReader) next() ([]byte, error) {
	r.acc = r.acc[:0]
	for {
		n, isString, err := r.dc.ReadDataChannel(r.buf)
		if errors.Is(err, io.ErrShortBuffer) || n > r.max || len(r.acc)+n > r.max {
			return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, r.max)
		}
		if err != nil {
			return nil, err
		}
		if isString && len(r.acc) == 0 {
			return r.buf[:n], nil
		}
		r.acc = append(r.acc, r.buf[:n]...)
		if isString {
			return r.acc, nil
		}
	}
}

// maxPiece is the largest single DataChannel message a reader accepts; a
// writer's pieces (chunk) must not exceed it.
const maxPiece = 256 << 10
