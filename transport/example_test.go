package transport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/roomwire/roomwire/room"
	"github.com/roomwire/roomwire/transport"
)

// Mounting roomwire in a plain net/http server, next to the application's
// own routes.
func ExampleHandler() {
	hub := room.NewHub(nil)
	rt := transport.New(hub, nil)

	mux := http.NewServeMux()
	mux.Handle("/rt/", http.StripPrefix("/rt", rt)) // WebSocket at /rt/ws
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "the application")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer shutdown(hub, rt) // before srv.Close: deferred calls run last first

	c, err := dial(srv.URL+"/rt/ws", "ada")
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()

	c.send(`{"t":"join","room":"notes","cid":"j1"}`)
	j := c.next("joined")
	fmt.Printf("joined %s: mode=%s v=%d doc=%s\n", j.Room, j.Mode, *j.V, j.Data)

	c.send(`{"t":"patch","room":"notes","cid":"p1","base":0,"ops":[{"op":"add","path":"/title","value":"hello"}]}`)
	ok := c.next("ok")
	fmt.Printf("patch %s: seq=%d v=%d\n", ok.CID, *ok.Seq, *ok.V)

	doc, v, _, _ := hub.Snapshot("notes")
	fmt.Printf("document v%d: %s\n", v, doc)
	// Output:
	// joined notes: mode=snapshot v=0 doc={}
	// patch p1: seq=1 v=1
	// document v1: {"title":"hello"}
}

// Mounting roomwire in a chi router: two clients in one room, one patches
// the document, the other receives the patch.
func ExampleHandler_chi() {
	hub := room.NewHub(nil)
	rt := transport.New(hub, &transport.Options{ResumeWindow: time.Minute})

	r := chi.NewRouter()
	r.Mount("/rt", http.StripPrefix("/rt", rt))
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "the application") })
	srv := httptest.NewServer(r)
	defer srv.Close()
	defer shutdown(hub, rt)

	ada, err := dial(srv.URL+"/rt/ws", "ada")
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer ada.Close()
	bob, err := dial(srv.URL+"/rt/ws", "bob")
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer bob.Close()

	ada.send(`{"t":"join","room":"board","cid":"a1"}`)
	ada.next("joined")
	bob.send(`{"t":"join","room":"board","cid":"b1"}`)
	j := bob.next("joined")
	fmt.Printf("bob joined: mode=%s members=%d\n", j.Mode, len(j.Members))
	p := ada.next("presence")
	fmt.Printf("ada sees: %s %s over %s\n", p.Event, p.Member.User, p.Member.Transport)

	ada.send(`{"t":"patch","room":"board","cid":"a2","base":0,"ops":[{"op":"add","path":"/cards","value":["todo"]}]}`)
	ok := ada.next("ok")
	fmt.Printf("ada's patch: v=%d\n", *ok.V)
	in := bob.next("patch")
	fmt.Printf("bob receives v=%d: %s\n", *in.V, in.Ops)
	// Output:
	// bob joined: mode=snapshot members=2
	// ada sees: join {"name":"bob"} over ws
	// ada's patch: v=1
	// bob receives v=1: [{"op":"add","path":"/cards","value":["todo"]}]
}

// shutdown stops roomwire the way a server does: the hub tells every client
// to reconnect, then the transports wait for their connections.
func shutdown(hub *room.Hub, rt *transport.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hub.Shutdown(ctx)
	rt.Shutdown(ctx)
}

// client is the least a WebSocket client needs to speak the protocol: say
// hello, send messages, read frames (messages separated by '\n').
type client struct {
	*websocket.Conn
	queue []msg
}

type msg struct {
	T       string          `json:"t"`
	Room    string          `json:"room"`
	CID     string          `json:"cid"`
	Mode    string          `json:"mode"`
	Seq     *uint64         `json:"seq"`
	V       *uint64         `json:"v"`
	Event   string          `json:"event"`
	Ops     json.RawMessage `json:"ops"`
	Data    json.RawMessage `json:"data"`
	Member  *room.Member    `json:"member"`
	Members []room.Member   `json:"members"`
}

func dial(httpURL, name string) (*client, error) {
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(httpURL, "http"), nil)
	if err != nil {
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	c := &client{Conn: conn}
	c.send(fmt.Sprintf(`{"t":"hello","user":{"name":%q}}`, name))
	if w := c.next("welcome"); w.T != "welcome" {
		conn.Close()
		return nil, fmt.Errorf("no welcome")
	}
	return c, nil
}

func (c *client) send(m string) { c.WriteMessage(websocket.TextMessage, []byte(m)) }

// next returns the next message of type t, skipping others; on a read error
// it returns a message of type "error".
func (c *client) next(t string) msg {
	for {
		for len(c.queue) > 0 {
			m := c.queue[0]
			c.queue = c.queue[1:]
			if m.T == t {
				return m
			}
		}
		_, frame, err := c.ReadMessage()
		if err != nil {
			return msg{T: "error", Data: json.RawMessage(fmt.Sprintf("%q", err))}
		}
		for line := range strings.SplitSeq(string(frame), "\n") {
			var m msg
			if json.Unmarshal([]byte(line), &m) == nil {
				c.queue = append(c.queue, m)
			}
		}
	}
}
