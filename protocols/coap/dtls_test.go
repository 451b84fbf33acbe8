package coap

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/twinmesh/twinmesh/actors"
)

// Over DTLS the PSK identity is the device ID and the key its primary or
// secondary key string; requests need no token.
func TestDTLSPSK(t *testing.T) {
	f := newFake("d1", "d2")
	s := startServer(t, f, nil)

	co, err := dialDTLS(s, "d1", key1)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	wantCode(t, post(t, co, "/devices/d1/messages/events", `{"secure":true}`), codes.Changed)
	if got := f.storedOf("d1"); len(got) != 1 {
		t.Fatalf("stored %+v", got)
	}
	wantCode(t, post(t, co, "/devices/d2/messages/events", `{}`), codes.Forbidden)
	eventually(t, "the session shown as coaps", func() bool {
		c, ok := f.lastSession("d1")
		return ok && c.connected && c.proto == "coaps"
	})

	short := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	t.Run("wrong key", func(t *testing.T) {
		if c, err := dialDTLS(s, "d2", "not-the-key"); err == nil {
			c.Close()
			t.Fatal("a handshake with a wrong key succeeded")
		}
	})
	t.Run("unknown identity", func(t *testing.T) {
		if c, err := dialDTLS(s, "ghost", key1); err == nil {
			c.Close()
			t.Fatal("a handshake with an unknown identity succeeded")
		}
	})
	t.Run("secondary key", func(t *testing.T) {
		// The node offers the key the device last used (the primary);
		// after one failed handshake from this address, the other one.
		var ok bool
		for try := 0; try < 2 && !ok; try++ {
			c, err := dialDTLS(s, "d2", key2)
			if err != nil {
				continue
			}
			_, err = c.Get(short(t), "/devices/d2/twin")
			c.Close()
			ok = err == nil
		}
		if !ok {
			t.Fatal("the secondary key never worked")
		}
		// Remembered: the next session with it works at once.
		c, err := dialDTLS(s, "d2", key2)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		res, err := c.Get(ctxT(t), "/devices/d2/twin")
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, res, codes.Content)
	})
}

// Deleting a device ends its DTLS sessions too.
func TestDeleteEndsSessions(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, nil)
	co, err := dialDTLS(s, "d1", key1)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	wantCode(t, post(t, co, "/devices/d1/messages/events", `{"a":1}`), codes.Changed)
	s.HandleEvent(actors.Event{Type: actors.EventTopology, Entity: "d1", Data: json.RawMessage(`{"deleted":true}`)})
	select {
	case <-co.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session of a deleted device is still open")
	}
}

// Disabling (or deleting) a device ends its DTLS sessions and
// observations at once.
func TestDisableEndsSessions(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, nil)
	co, err := dialDTLS(s, "d1", key1)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	wantCode(t, post(t, co, "/devices/d1/messages/events", `{"a":1}`), codes.Changed)
	eventually(t, "the session", func() bool { return s.sessionCount() == 1 })
	f.mu.Lock()
	idn := f.ids["d1"]
	idn.Enabled = false
	f.ids["d1"] = idn
	f.mu.Unlock()
	data, _ := json.Marshal(map[string]string{"status": "disabled"})
	s.HandleEvent(actors.Event{Type: actors.EventIdentity, Entity: "d1", Data: data})
	eventually(t, "the session ended", func() bool { return s.sessionCount() == 0 })
	select {
	case <-co.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client's session is still open")
	}
	if c, err := dialDTLS(s, "d1", key1); err == nil {
		c.Close()
		t.Fatal("a disabled device opened a session")
	}
	eventually(t, "shown disconnected", func() bool {
		c, ok := f.lastSession("d1")
		return ok && !c.connected
	})
}

// Presence: a request shows the device connected for PresenceWindow; an
// observation keeps it connected.
func TestPresence(t *testing.T) {
	f := newFake("d1", "d2")
	s := startServer(t, f, func(c *Config) { c.PresenceWindow = 400 * time.Millisecond })
	co := dial(t, s)
	wantCode(t, post(t, co, "/devices/d1/messages/events", `{}`, sasOpt(token(t, "d1", time.Hour))), codes.Changed)
	eventually(t, "d1 connected over coap", func() bool {
		c, ok := f.lastSession("d1")
		return ok && c.connected && c.proto == "coap"
	})
	eventually(t, "d1 disconnected after the window", func() bool {
		c, _ := f.lastSession("d1")
		return !c.connected && c.proto == "coap"
	})
	co2 := dial(t, s)
	if _, err := co2.Observe(ctxT(t), "/devices/d2/twin/desired", func(*pool.Message) {}, sasOpt(token(t, "d2", time.Hour))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "d2 connected", func() bool { c, _ := f.lastSession("d2"); return c.connected })
	time.Sleep(time.Second)
	if c, _ := f.lastSession("d2"); !c.connected || !s.IsConnected("d2") {
		t.Fatal("an observing device shown disconnected")
	}
}
