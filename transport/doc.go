// Package transport mounts roomwire's transports (WebSocket, SSE+POST and
// long-polling; WebRTC DataChannels plug in beside them) under one
// http.Handler, over one session registry, so that a session begun on one
// transport can resume on another.
//
// The shared session plumbing (outbox, session sequence numbers, resume,
// byte-bounded queues) lives in package outbox; each transport lives in its
// own package and only moves bytes between its connections and sessions.
package transport
