// Package browsertest tests roomwire's browser client and demo pages in
// headless Chromium, driven with chromedp, against a real server started
// in the test (the same handlers as cmd/roomwire: the transports under
// /rt/ and the web files at /), directly and behind nginx configured to
// strip WebSocket upgrades or to buffer responses.
//
// It has no code of its own: everything is in its tests.
//
//	go test -race ./web/browsertest
//
// Chromium comes from Debian's chromium package (/usr/bin/chromium) and
// nginx from the nginx package. Without Chromium the tests are skipped,
// except when CI=true, where they fail. Screenshots of every page go to
// $ROOMWIRE_ARTIFACTS (a temporary directory if unset); the test log names
// each file.
package browsertest
