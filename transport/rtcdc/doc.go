// Package rtcdc carries roomwire sessions over WebRTC DataChannels
// (pion/webrtc/v4), with the server as the client's peer. A client
// negotiates over HTTP without any other session (POST .../offer with its
// SDP offer, answered with the server's answer and a negotiation id; POST
// .../candidate with its trickled ICE candidates), then opens two
// DataChannels: "roomwire", reliable and ordered, for hello/welcome, every
// durable message and acks; and "roomwire-eph", unordered with
// maxRetransmits 0, on which the server sends ephemeral messages. Messages
// are the WebSocket transport's JSON lines, one or more per DataChannel
// message; a server message larger than a piece (64 KiB) is sent as binary
// pieces followed by a final string piece. See docs/protocol-webrtc.md.
//
// # Concurrency
//
// Each PeerConnection has one owner goroutine (conn.run), started when the
// offer is answered. It waits for the reliable channel and hello, then
// reads that channel and starts the only writer, which in turn starts the
// reader of the ephemeral channel; run joins both, closes the
// PeerConnection and detaches the session before it returns. pion's
// callbacks (OnDataChannel, OnOpen, OnBufferedAmountLow,
// OnConnectionStateChange) only hand channels and signals to these
// goroutines through buffered channels: they never write. DataChannels are
// detached, so reads happen on the owner goroutines, not in pion's.
//
// The writer pulls from the session only while the reliable channel's
// buffered amount is under Options.MaxBufferedBytes, and otherwise waits
// for OnBufferedAmountLow (threshold a quarter of it): SCTP holds a bounded
// amount, the session's byte-bounded outbox the rest, and a client that
// stops reading ends as a slow consumer like on any transport.
//
// # Lifetimes and liveness
//
// A PeerConnection is closed when its session ends, when its channel or ICE
// fails, when the client has not said hello within ConnectTimeout (15 s)
// of its offer, and at Shutdown. A dead peer is detected by ICE consent:
// after DisconnectedTimeout + FailedTimeout of silence (5 s + 10 s) the
// connection ends with 4002 and the session's resume window begins.
// Clients may also send ping (answered with pong, on either channel).
//
// Dial is the Go client side.
package rtcdc
