// Package clustertest holds what roomwire's multi-node and persistence tests
// share: a redis-server started per test on a free loopback port, a node (a
// hub and every transport behind an httptest server), a WebSocket
// roomtest.Conn, and a server process that a test can kill -9. Its own tests
// are the multi-node scenarios: ordering, convergence and node failure
// across three nodes sharing one Redis.
//
// Everything here is for tests; nothing in the module's library imports it.
package clustertest
