package coap

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// notes collects the notifications of an observation.
type notes struct {
	mu   sync.Mutex
	seqs []uint32
	docs []string
}

func (n *notes) add(t *testing.T, m *pool.Message) {
	seq, _ := m.Observe()
	b := body(t, m)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seqs = append(n.seqs, seq)
	n.docs = append(n.docs, b)
}

func (n *notes) last() (string, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.docs) == 0 {
		return "", 0
	}
	return n.docs[len(n.docs)-1], len(n.docs)
}

func TestObserveDesired(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, nil)
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)
	var n notes
	obs, err := co.Observe(ctxT(t), "/devices/d1/twin/desired", func(m *pool.Message) { n.add(t, m) }, sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registration's answer", func() bool { d, _ := n.last(); return d == `{"$version":1}` })
	f.desiredChanged(s, "d1", `{"$version":2,"fan":"on"}`)
	eventually(t, "a notification", func() bool { d, _ := n.last(); return d == `{"$version":2,"fan":"on"}` })
	// A desired document over one datagram is notified block-wise: the
	// first block, then the client fetches the rest (RFC 7959 section 2.6).
	big := `{"$version":3,"blob":"` + strings.Repeat("z", 3000) + `"}`
	f.desiredChanged(s, "d1", big)
	eventually(t, "a block-wise notification", func() bool { d, _ := n.last(); return d == big })
	n.mu.Lock()
	for i := 1; i < len(n.seqs); i++ {
		if n.seqs[i] <= n.seqs[i-1] {
			t.Fatalf("sequence numbers %v do not increase", n.seqs)
		}
	}
	n.mu.Unlock()
	if s.obs.len() != 1 {
		t.Fatalf("%d observers", s.obs.len())
	}
	if err := obs.Cancel(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the observer removed", func() bool { return s.obs.len() == 0 })
}

func TestObserveInbox(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, nil)
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)
	var n notes
	_, err := co.Observe(ctxT(t), "/devices/d1/messages/devicebound", func(m *pool.Message) { n.add(t, m) }, sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registration's answer (nothing pending)", func() bool { d, k := n.last(); return k == 1 && d == "" })
	f.send(s, "d1", Message{ID: "m1", Payload: []byte(`{"cmd":"reboot"}`), Properties: map[string]string{"p": "1"}})
	f.send(s, "d1", Message{ID: "m2", Payload: []byte("plain text")})
	eventually(t, "m1 notified", func() bool { d, _ := n.last(); return strings.Contains(d, `"m1"`) })
	var env struct {
		MessageID  string            `json:"messageId"`
		Payload    json.RawMessage   `json:"payload"`
		Properties map[string]string `json:"properties"`
	}
	d, _ := n.last()
	if err := json.Unmarshal([]byte(d), &env); err != nil || env.MessageID != "m1" || string(env.Payload) != `{"cmd":"reboot"}` || env.Properties["p"] != "1" {
		t.Fatalf("notification %s: %+v %v", d, env, err)
	}
	// One message at a time: m2 comes once m1 is completed.
	time.Sleep(200 * time.Millisecond)
	if d, _ := n.last(); !strings.Contains(d, `"m1"`) {
		t.Fatalf("m2 notified before m1 was completed: %s", d)
	}
	res, err := co.Delete(ctxT(t), "/devices/d1/messages/devicebound/m1", sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.Deleted)
	eventually(t, "m2 notified", func() bool { d, _ := n.last(); return strings.Contains(d, `"payload":"plain text"`) })
	// A message over one datagram is notified block-wise.
	big := strings.Repeat("b", 4000)
	f.send(s, "d1", Message{ID: "m3", Payload: []byte(big)})
	res, err = co.Delete(ctxT(t), "/devices/d1/messages/devicebound/m2", sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.Deleted)
	eventually(t, "m3 notified whole", func() bool { d, _ := n.last(); return d == `{"messageId":"m3","payload":"`+big+`"}` })
	res, err = co.Delete(ctxT(t), "/devices/d1/messages/devicebound/m1", sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.NotFound)
}

// An observer that stops acknowledging confirmable notifications is
// dropped after the retransmissions; one that answers with a Reset at once.
func TestObserverDropped(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, func(c *Config) {
		c.AckTimeout = 50 * time.Millisecond
		c.MaxRetransmit = 2
	})
	tok := token(t, "d1", time.Hour)
	register := func(raw *rawConn, mid uint16, tkn byte) {
		t.Helper()
		raw.write(encode(t, message.Confirmable, codes.GET, mid, []byte{tkn},
			pathOpts("devices/d1/twin/desired", message.Option{ID: message.Observe, Value: nil}, sasOpt(tok)), nil))
		m := decode(t, raw.read(5*time.Second))
		if _, err := m.Observe(); err != nil || m.Code() != codes.Content {
			t.Fatalf("registration answered %v", m)
		}
	}
	t.Run("silent", func(t *testing.T) {
		raw := dialRaw(t, s.Addr())
		register(raw, 1, 0xa)
		eventually(t, "the observer", func() bool { return s.obs.len() == 1 })
		f.desiredChanged(s, "d1", `{"$version":5}`)
		// The notification is sent, then retransmitted; never acknowledged.
		for i := 0; i < 3; i++ {
			m := raw.read(5 * time.Second)
			if m == nil || decode(t, m).Type() != message.Confirmable {
				t.Fatalf("transmission %d: %x", i, m)
			}
		}
		eventually(t, "the silent observer dropped", func() bool { return s.obs.len() == 0 })
	})
	t.Run("reset", func(t *testing.T) {
		raw := dialRaw(t, s.Addr())
		register(raw, 2, 0xb)
		eventually(t, "the observer", func() bool { return s.obs.len() == 1 })
		f.desiredChanged(s, "d1", `{"$version":6}`)
		m := decode(t, raw.read(5*time.Second))
		raw.write(encode(t, message.Reset, codes.Empty, uint16(m.MessageID()), nil, nil, nil))
		eventually(t, "the observer dropped on Reset", func() bool { return s.obs.len() == 0 })
	})
	t.Run("acknowledging", func(t *testing.T) {
		raw := dialRaw(t, s.Addr())
		register(raw, 3, 0xc)
		f.desiredChanged(s, "d1", `{"$version":7}`)
		m := decode(t, raw.read(5*time.Second))
		raw.write(encode(t, message.Acknowledgement, codes.Empty, uint16(m.MessageID()), nil, nil, nil))
		time.Sleep(500 * time.Millisecond)
		if s.obs.len() != 1 {
			t.Fatal("an acknowledging observer was dropped")
		}
	})
}

// Every observer gets the representation again each ObserveRefresh, with
// a Max-Age telling the client when to re-register if nothing comes (after
// a node restart, say).
func TestObserveRefresh(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, func(c *Config) { c.ObserveRefresh = 300 * time.Millisecond })
	co := dial(t, s)
	var n notes
	var maxAge uint32
	var mu sync.Mutex
	_, err := co.Observe(ctxT(t), "/devices/d1/twin/desired", func(m *pool.Message) {
		v, _ := m.GetOptionUint32(message.MaxAge)
		mu.Lock()
		maxAge = v
		mu.Unlock()
		n.add(t, m)
	}, sasOpt(token(t, "d1", time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "two refreshes", func() bool { _, k := n.last(); return k >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if maxAge != 60 {
		t.Fatalf("Max-Age %d, want the refresh plus a minute", maxAge)
	}
}

// An observation registered with a SAS token ends when the token expires:
// the client gets a final 4.01.
func TestObserveEndsWithToken(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, func(c *Config) { c.ObserveRefresh = 400 * time.Millisecond })
	co := dial(t, s)
	var n notes
	codesSeen := make(chan codes.Code, 8)
	_, err := co.Observe(ctxT(t), "/devices/d1/twin/desired", func(m *pool.Message) {
		codesSeen <- m.Code()
		n.add(t, m)
	}, sasOpt(token(t, "d1", 1500*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-codesSeen:
			if c == codes.Unauthorized {
				eventually(t, "the observer dropped", func() bool { return s.obs.len() == 0 })
				return
			}
		case <-deadline:
			t.Fatal("no final 4.01 after the token expired")
		}
	}
}
