// Package ws carries roomwire sessions over WebSocket (gorilla/websocket).
//
// Each connection has exactly two goroutines: a reader, which owns the
// connection from the moment ServeHTTP hands it over, and one writer, which
// the reader starts and joins before it returns. Only the writer writes data
// frames; it also sends pings, and drains everything the session has queued
// into one frame (messages separated by '\n'). Control frames may be written
// by gorilla's reader (close replies, 1009 on an oversize message), which
// gorilla allows concurrently with the writer.
//
// A connection's first message must be hello; the reply is welcome. See
// docs/PROTOCOL.md for the wire format and close codes.
package ws
