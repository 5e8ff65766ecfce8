// Package signaling negotiates WebRTC DataChannels for roomwire and keeps a
// message channel between two room members that survives the loss of its
// direct path.
//
//   - NewAPI builds the one pion API a server or client shares between its
//     PeerConnections: DataChannels detached, multicast DNS off, candidate
//     filters, ICE timeouts, an optional single-port UDP mux (ListenUDP,
//     with a large receive buffer) and 1:1 NAT addresses. PublicOnly is the
//     remote-candidate filter a server uses by default.
//   - Link is a peer-to-peer channel between two members of a room. It
//     negotiates a direct PeerConnection with signal messages sent over
//     the member's own session (any transport), queueing candidates that
//     arrive before the remote description and applying them in order, and
//     sends over the direct DataChannel while it is open and through the
//     server relay otherwise, with per-link sequence numbers, cumulative
//     acknowledgements, replay of unacknowledged messages when the direct
//     path dies and duplicate suppression at the receiver.
//
// The link knows nothing of a client library: it takes a function that
// sends one roomwire message over the session, and is fed the signal, relay
// and error messages meant for it with Deliver. The WebRTC server peer and
// its HTTP negotiation live in transport/rtcdc. The wire protocol is in
// docs/protocol-webrtc.md.
//
// # Concurrency
//
// A Link has one goroutine that owns its PeerConnection and does every
// negotiation step and every write (to the DataChannels and to the session
// function), plus one reader goroutine per open DataChannel; pion's
// callbacks only append events to a queue and wake that goroutine. Close
// says bye, closes the PeerConnection and joins every goroutine. Link's
// methods are safe for concurrent use.
package signaling
