package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/roomwire/roomwire/client"
	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
)

// startServer mounts roomwire under /rt of an in-process HTTP server, and
// returns its URL and a function that shuts it down.
func startServer() (string, func()) {
	hub := room.NewHub(nil)
	rt := transport.New(hub, nil)
	mux := http.NewServeMux()
	mux.Handle("/rt/", http.StripPrefix("/rt", rt))
	srv := httptest.NewServer(mux)
	return srv.URL + "/rt", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hub.Shutdown(ctx)
		rt.Shutdown(ctx)
		srv.Close()
	}
}

// Two clients share a document: one patches it and publishes an event, the
// other sees both on its event channel and reads the document.
func Example() {
	base, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, base, &client.Options{User: json.RawMessage(`{"name":"alice"}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, base, &client.Options{User: json.RawMessage(`{"name":"bob"}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bob.Close()

	ra, err := alice.Join(ctx, "notes")
	if err != nil {
		fmt.Println(err)
		return
	}
	rb, err := bob.Join(ctx, "notes")
	if err != nil {
		fmt.Println(err)
		return
	}
	events := rb.Events()

	// Patch applies to alice's local view at once; the server then
	// orders it and tells bob.
	if err := ra.Patch(json.RawMessage(`[{"op":"add","path":"/title","value":"Groceries"}]`)); err != nil {
		fmt.Println(err)
		return
	}
	doc, _ := ra.Doc()
	fmt.Printf("alice sees %s at once\n", doc)
	if err := ra.Publish(json.RawMessage(`{"saved":true}`)); err != nil {
		fmt.Println(err)
		return
	}

	for ev := range events {
		fmt.Printf("bob: %s seq %d: %s%s\n", ev.Kind, ev.Seq, ev.Ops, ev.Data)
		if ev.Kind == client.EventPublish {
			break
		}
	}
	doc, version := rb.Doc()
	fmt.Printf("bob's document: %s, version %d\n", doc, version)
	// Output:
	// alice sees {"title":"Groceries"} at once
	// bob: patch seq 1: [{"op":"add","path":"/title","value":"Groceries"}]
	// bob: publish seq 2: {"saved":true}
	// bob's document: {"title":"Groceries"}, version 1
}

// Presence: the joined reply carries the member list; later joins and
// leaves arrive as events.
func ExampleRoom_Members() {
	base, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, base, &client.Options{User: json.RawMessage(`{"name":"alice"}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer alice.Close()
	ra, err := alice.Join(ctx, "lobby")
	if err != nil {
		fmt.Println(err)
		return
	}
	events := ra.Events()

	bob, err := client.Dial(ctx, base, &client.Options{User: json.RawMessage(`{"name":"bob"}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bob.Close()
	rb, err := bob.Join(ctx, "lobby")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("bob sees", len(rb.Members()), "members")
	ev := <-events
	fmt.Printf("alice: %s %s\n", ev.Kind, ev.Member.User)

	// A cursor: ephemeral, latest value wins.
	if err := rb.SetEphemeral("cursor", json.RawMessage(`{"x":3,"y":4}`)); err != nil {
		fmt.Println(err)
		return
	}
	ev = <-events
	fmt.Printf("alice: %s %s=%s\n", ev.Kind, ev.Key, ev.Data)

	if err := rb.Leave(ctx); err != nil {
		fmt.Println(err)
		return
	}
	ev = <-events
	fmt.Printf("alice: %s %s\n", ev.Kind, ev.Member.User)
	// Output:
	// bob sees 2 members
	// alice: member-join {"name":"bob"}
	// alice: ephemeral cursor={"x":3,"y":4}
	// alice: member-leave {"name":"bob"}
}

// Settle waits for the server's verdict on everything sent; Confirmed is
// then the server's document.
func ExampleRoom_Settle() {
	base, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, base, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	r, err := c.Join(ctx, "counter")
	if err != nil {
		fmt.Println(err)
		return
	}
	r.Patch(json.RawMessage(`[{"op":"add","path":"/n","value":0}]`))
	for i := 1; i <= 3; i++ {
		r.Patch(json.RawMessage(fmt.Sprintf(`[{"op":"test","path":"/n","value":%d},{"op":"replace","path":"/n","value":%d}]`, i-1, i)))
	}
	if err := r.Settle(ctx); err != nil {
		fmt.Println(err)
		return
	}
	doc, version, seq := r.Confirmed()
	fmt.Printf("%s version %d seq %d, %d pending\n", doc, version, seq, r.Pending())
	// Output:
	// {"n":3} version 4 seq 4, 0 pending
}

// Transports: a client forced onto long-polling (as if behind a proxy that
// lets nothing else through) and one on the default, WebSocket, share a
// room. Left to itself, a client picks the best transport that works and
// moves up when a better one starts working.
func ExampleOptions_transports() {
	base, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	lp, err := client.Dial(ctx, base, &client.Options{
		User:       json.RawMessage(`{"name":"polly"}`),
		Transports: []string{client.TransportLongPoll},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lp.Close()
	ws, err := client.Dial(ctx, base, &client.Options{User: json.RawMessage(`{"name":"wes"}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.Close()
	fmt.Println("polly is on", lp.Stats().Transport, "and wes on", ws.Stats().Transport)

	rp, err := lp.Join(ctx, "mixed")
	if err != nil {
		fmt.Println(err)
		return
	}
	rw, err := ws.Join(ctx, "mixed")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range rw.Members() {
		fmt.Printf("member %s over %s\n", m.User, m.Transport)
	}
	events := rw.Events()
	if err := rp.Publish(json.RawMessage(`"hello from a long-poll"`)); err != nil {
		fmt.Println(err)
		return
	}
	for ev := range events {
		if ev.Kind == client.EventPublish {
			fmt.Printf("wes got %s\n", ev.Data)
			break
		}
	}
	// Unordered output:
	// polly is on longpoll and wes on ws
	// member {"name":"polly"} over longpoll
	// member {"name":"wes"} over ws
	// wes got "hello from a long-poll"
}
