package signaling

import (
	"encoding/json"

	"github.com/pion/webrtc/v4"
)

// The labels of a link's two direct DataChannels.
const (
	// LabelLink is the reliable, ordered channel of a link.
	LabelLink = "roomwire-link"
	// LabelLinkEphemeral is the unordered channel without
	// retransmissions (maxRetransmits 0) for ephemeral values.
	LabelLinkEphemeral = "roomwire-link-eph"
)

// Signal is the "data" of a signal message between two peers.
type Signal struct {
	// Type is "offer", "answer", "candidate" or "bye".
	Type string `json:"type"`
	// PC numbers the offerer's PeerConnection attempts; signals of an
	// older attempt are ignored.
	PC  int    `json:"pc"`
	SDP string `json:"sdp,omitempty"`
	// Candidate is a trickled candidate; null (with type "candidate")
	// marks the end of the sender's candidates.
	Candidate *webrtc.ICECandidateInit `json:"candidate,omitempty"`
}

// Link frame kinds, in a frame's "k".
const (
	kindData = "d" // durable data, numbered n (1, 2, ...)
	kindAck  = "a" // every data frame up to n has been received
	kindEph  = "e" // ephemeral value under key, numbered n per link
)

// frame is what a link sends on its DataChannels and inside relay "data".
type frame struct {
	K   string          `json:"k"`
	N   uint64          `json:"n"`
	Key string          `json:"key,omitempty"`
	D   json.RawMessage `json:"d,omitempty"`
}

// inbound is the part of a server message that a link reads.
type inbound struct {
	T    string          `json:"t"`
	Room string          `json:"room"`
	From string          `json:"from"`
	CID  string          `json:"cid"`
	Code string          `json:"code"`
	Msg  string          `json:"msg"`
	Key  string          `json:"key"`
	Data json.RawMessage `json:"data"`
}

// outbound is a client message a link sends over its session.
type outbound struct {
	T    string `json:"t"`
	Room string `json:"room"`
	To   string `json:"to"`
	CID  string `json:"cid,omitempty"`
	Key  string `json:"key,omitempty"`
	Data any    `json:"data"`
}
