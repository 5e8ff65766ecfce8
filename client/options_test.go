package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/roomwire/roomwire/client"
)

func TestTransportOption(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	srv := newServer(t, nil, nil)
	for _, tc := range []struct {
		names []string
		want  string // the transport connected over; "" means New fails
	}{
		{nil, client.TransportWS},
		{[]string{client.TransportWS}, client.TransportWS},
		{[]string{client.TransportSSE}, client.TransportSSE},
		{[]string{client.TransportLongPoll}, client.TransportLongPoll},
		{[]string{client.TransportSSE, client.TransportLongPoll, client.TransportWS}, client.TransportSSE},
		{[]string{client.TransportLongPoll, client.TransportWS}, client.TransportLongPoll},
		{[]string{client.TransportSSE, client.TransportSSE}, ""},
		{[]string{"carrier-pigeon"}, ""},
	} {
		o := fastOptions("x")
		o.Transports = tc.names
		c, err := client.Dial(ctx, srv.http.URL, o)
		if tc.want == "" {
			if !errors.Is(err, client.ErrNoTransport) {
				t.Errorf("%v: %v, want ErrNoTransport", tc.names, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.names, err)
			continue
		}
		if got := c.Stats().Transport; got != tc.want {
			t.Errorf("%v: transport %q, want %q", tc.names, got, tc.want)
		}
		c.Close()
	}
	for _, bad := range []string{"ftp://x", "://"} {
		if _, err := client.New(bad, nil); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// TestDialUnreachable: Dial keeps trying until ctx ends and then says why.
func TestDialUnreachable(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	px := newProxy(t, "127.0.0.1:1")
	px.setRefuse(true)
	short := deadline(t, 200*time.Millisecond)
	_, err := client.Dial(short, px.url(), fastOptions("x"))
	if !errors.Is(err, short.Err()) || ctx.Err() != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Logf("dial error: %v", err)
}

// TestOfflineStart: a client created while the server is unreachable
// queues its joins and patches and carries them out once it connects.
func TestOfflineStart(t *testing.T) {
	ctx := deadline(t, 20*time.Second)
	srv := newServer(t, nil, nil)
	px := newProxy(t, srv.addr())
	px.setRefuse(true)
	c, err := client.New(px.url(), fastOptions("late"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	names := []string{"one", "two", "three"}
	joined := make(chan *client.Room, len(names))
	for _, n := range names {
		go func() {
			r, err := c.Join(ctx, n)
			if err != nil {
				t.Error(err)
			}
			joined <- r
		}()
	}
	waitState(ctx, t, c, client.StateDisconnected)
	px.setRefuse(false)
	for range names {
		select {
		case r := <-joined:
			if r == nil {
				t.FailNow()
			}
			if err := r.Patch([]byte(`[{"op":"add","path":"/room","value":"` + r.Name() + `"}]`)); err != nil {
				t.Fatal(err)
			}
			converged(ctx, t, srv, r.Name(), r)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}
