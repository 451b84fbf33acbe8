package coap

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/twinmesh/twinmesh/protocols/devicerate"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

func TestTelemetry(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, nil)
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)

	t.Run("confirmable is stored before the answer", func(t *testing.T) {
		wantCode(t, post(t, co, "/devices/d1/messages/events", `{"temp":21.5}`, sasOpt(tok)), codes.Changed)
		got := f.storedOf("d1")
		if len(got) != 1 || string(got[0].Payload) != `{"temp":21.5}` || !got[0].Confirmable || got[0].ContentType != "application/json" {
			t.Fatalf("stored %+v", got)
		}
	})
	t.Run("non-confirmable is queued", func(t *testing.T) {
		req, err := co.NewPostRequest(ctxT(t), "/devices/d1/messages/events", message.AppJSON, strings.NewReader(`{"n":1}`), sasOpt(tok))
		if err != nil {
			t.Fatal(err)
		}
		req.SetType(message.NonConfirmable)
		res, err := co.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, res, codes.Changed)
		eventually(t, "the NON message stored", func() bool { return len(f.storedOf("d1")) == 2 })
		if got := f.storedOf("d1")[1]; got.Confirmable {
			t.Fatalf("NON stored as confirmable: %+v", got)
		}
	})
	t.Run("a gateway sends for its child", func(t *testing.T) {
		f.mu.Lock()
		f.ids["gw"] = Identity{DeviceID: "gw", PrimaryKey: key1, SecondaryKey: key2, Enabled: true}
		f.gateways["d1"] = "gw"
		f.mu.Unlock()
		wantCode(t, post(t, co, "/devices/d1/messages/events", `{"via":true}`, sasOpt(token(t, "gw", time.Hour))), codes.Changed)
	})
}

func TestRefusals(t *testing.T) {
	f := newFake("d1", "d2")
	f.ids["off"] = Identity{DeviceID: "off", PrimaryKey: key1, SecondaryKey: key2}
	s := startServer(t, f, func(c *Config) { c.MaxPayload = 2048 })
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)
	expired, _ := sas.Sign("hub.test/devices/d1", key1, time.Now().Add(-time.Minute))
	forged, _ := sas.Sign("hub.test/devices/d1", "Zm9yZ2Vk", time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name, path, payload string
		opts                []message.Option
		code                codes.Code
		diag                string
	}{
		{"no token", "/devices/d1/messages/events", `{}`, nil, codes.Unauthorized, "no sas"},
		{"expired token", "/devices/d1/messages/events", `{}`, []message.Option{sasOpt(expired)}, codes.Unauthorized, "expired"},
		{"forged token", "/devices/d1/messages/events", `{}`, []message.Option{sasOpt(forged)}, codes.Unauthorized, "signature"},
		{"disabled device", "/devices/off/messages/events", `{}`, []message.Option{sasOpt(token(t, "off", time.Hour))}, codes.Unauthorized, "disabled"},
		{"unknown device", "/devices/ghost/messages/events", `{}`, []message.Option{sasOpt(token(t, "ghost", time.Hour))}, codes.Unauthorized, "unknown device"},
		{"another device's resource", "/devices/d2/messages/events", `{}`, []message.Option{sasOpt(tok)}, codes.Forbidden, "may not use"},
		{"unknown resource", "/devices/d1/methods", `{}`, []message.Option{sasOpt(tok)}, codes.NotFound, "no resource"},
		{"wrong method", "/devices/d1/twin", `{}`, []message.Option{sasOpt(tok)}, codes.MethodNotAllowed, "not allowed"},
		{"too large", "/devices/d1/twin/reported", `{"x":"` + strings.Repeat("y", 3000) + `"}`, []message.Option{sasOpt(tok)}, codes.RequestEntityTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := post(t, co, tc.path, tc.payload, tc.opts...)
			wantCode(t, res, tc.code)
			if d := body(t, res); !strings.Contains(d, tc.diag) {
				t.Fatalf("diagnostic %q does not say %q", d, tc.diag)
			}
			if tc.code == codes.RequestEntityTooLarge {
				if v, err := res.GetOptionUint32(message.Size1); err != nil || v != 2048 {
					t.Fatalf("Size1 = %d, %v; want the limit 2048", v, err)
				}
			}
		})
	}
	if n := len(f.storedOf("d1")) + len(f.storedOf("d2")); n != 0 {
		t.Fatalf("%d refused messages stored", n)
	}
}

// The rate limit is the devicerate bucket the other adapters share, and a
// throttled request is told when to come back (Max-Age, RFC 8516).
func TestThrottledSharesTheBucket(t *testing.T) {
	f := newFake("d1")
	shared := devicerate.New(1, 3)
	s := startServer(t, f, func(c *Config) { c.Rate = shared })
	if !shared.Allow("d1", time.Now()) { // a message over MQTT, say
		t.Fatal("first token refused")
	}
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)
	for i := 0; i < 2; i++ {
		wantCode(t, post(t, co, "/devices/d1/messages/events", `{"i":1}`, sasOpt(tok)), codes.Changed)
	}
	res := post(t, co, "/devices/d1/messages/events", `{"i":2}`, sasOpt(tok))
	wantCode(t, res, codes.TooManyRequests)
	if v, err := res.GetOptionUint32(message.MaxAge); err != nil || v < 1 {
		t.Fatalf("Max-Age = %d, %v; want a retry delay", v, err)
	}
	if n := len(f.storedOf("d1")); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
}

func TestTwin(t *testing.T) {
	f := newFake("d1")
	f.desired["d1"] = json.RawMessage(`{"$version":3,"fan":"on"}`)
	s := startServer(t, f, nil)
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)

	res, err := co.Get(ctxT(t), "/devices/d1/twin", sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.Content)
	if got := body(t, res); got != `{"desired":{"$version":3,"fan":"on"},"reported":{"$version":1}}` {
		t.Fatalf("twin %s", got)
	}
	if cf, _ := res.ContentFormat(); cf != message.AppJSON {
		t.Fatalf("content format %v", cf)
	}
	for _, method := range []codes.Code{codes.PATCH, codes.IPATCH, codes.POST} {
		req, err := co.NewPostRequest(ctxT(t), "/devices/d1/twin/reported", message.AppJSON, strings.NewReader(`{"fan":"on"}`), sasOpt(tok))
		if err != nil {
			t.Fatal(err)
		}
		req.SetCode(method)
		res, err := co.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, res, codes.Changed)
		if got := body(t, res); !strings.HasPrefix(got, `{"$version":`) {
			t.Fatalf("%v: %s", method, got)
		}
	}
	res, err = co.Patch(ctxT(t), "/devices/d1/twin/reported", message.AppJSON, strings.NewReader(`{"fan":`), sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.BadRequest)
}

// A twin over one datagram goes block-wise (RFC 7959) both ways: a large
// reported patch is uploaded in Block1 blocks, a large twin read in Block2
// blocks.
func TestBlockwise(t *testing.T) {
	f := newFake("d1")
	big := `{"$version":7,"blob":"` + strings.Repeat("0123456789", 500) + `"}`
	f.desired["d1"] = json.RawMessage(big)
	s := startServer(t, f, nil)
	co := dial(t, s)
	tok := token(t, "d1", time.Hour)

	res, err := co.Get(ctxT(t), "/devices/d1/twin/desired", sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.Content)
	if got := body(t, res); got != big {
		t.Fatalf("desired of %d bytes, want %d", len(got), len(big))
	}
	patch := `{"log":"` + strings.Repeat("abcdefghij", 400) + `"}`
	res, err = co.Patch(ctxT(t), "/devices/d1/twin/reported", message.AppJSON, strings.NewReader(patch), sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.Changed)
	f.mu.Lock()
	got := string(f.reported["d1"])
	f.mu.Unlock()
	if got != patch {
		t.Fatalf("reported patch of %d bytes arrived as %d", len(patch), len(got))
	}
	// A block-wise upload over the limit is refused at its first block
	// over it, before the node holds the body.
	huge := strings.Repeat("x", 300<<10)
	res, err = co.Patch(ctxT(t), "/devices/d1/twin/reported", message.AppJSON, strings.NewReader(huge), sasOpt(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res, codes.RequestEntityTooLarge)
}

// An unauthenticated request is never answered with more bytes than it
// carried: the diagnostic is cut to fit.
func TestAmplification(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, nil)
	raw := dialRaw(t, s.Addr())
	for i, tc := range []struct {
		name string
		opts message.Options
	}{
		{"no token, short path", pathOpts("devices/d1/twin")},
		{"unknown resource", pathOpts("x")},
		{"bad token", pathOpts("devices/d1/twin", message.Option{ID: message.URIQuery, Value: []byte("sas=SharedAccessSignature sr=x&sig=y&se=1")})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := encode(t, message.Confirmable, codes.GET, uint16(100+i), []byte{1}, tc.opts, nil)
			raw.write(req)
			res := raw.read(5 * time.Second)
			if res == nil {
				t.Fatal("no answer")
			}
			if len(res) > len(req) {
				t.Fatalf("answered %d bytes to a %d-byte unauthenticated request", len(res), len(req))
			}
			if m := decode(t, res); m.Code() < codes.BadRequest {
				t.Fatalf("code %v", m.Code())
			}
		})
	}
	// An authenticated request may get a longer answer (the twin).
	tok := token(t, "d1", time.Hour)
	req := encode(t, message.Confirmable, codes.GET, 8, []byte{2}, pathOpts("devices/d1/twin", sasOpt(tok)), nil)
	raw.write(req)
	if m := decode(t, raw.read(5*time.Second)); m.Code() != codes.Content {
		t.Fatalf("authenticated GET: %v", m.Code())
	}
	// A short datagram reusing that message ID is not a retransmission:
	// it must not get the cached twin.
	raw.write(encode(t, message.Confirmable, codes.GET, 8, nil, nil, nil))
	if res := raw.read(500 * time.Millisecond); res != nil {
		t.Fatalf("a 4-byte datagram reusing a message ID got %d bytes", len(res))
	}
}

// A retransmitted confirmable request (same message ID and token from the
// same endpoint) is answered from the exchange cache — also while the
// first copy is still being stored — and stored once.
func TestRetransmissionAppliedOnce(t *testing.T) {
	f := newFake("d1")
	f.telDelay = 300 * time.Millisecond
	s := startServer(t, f, nil)
	raw := dialRaw(t, s.Addr())
	tok := token(t, "d1", time.Hour)
	req := encode(t, message.Confirmable, codes.POST, 4242, []byte{9, 9}, pathOpts("devices/d1/messages/events", sasOpt(tok)), []byte(`{"x":1}`))
	raw.write(req)
	time.Sleep(50 * time.Millisecond)
	raw.write(req) // while the first is being stored: dropped
	first := raw.read(5 * time.Second)
	if first == nil {
		t.Fatal("no answer")
	}
	m := decode(t, first)
	if m.Type() != message.Acknowledgement || m.Code() != codes.Changed || m.MessageID() != 4242 {
		t.Fatalf("answer %v", m)
	}
	for i := 0; i < 3; i++ {
		// Like a client, retransmit until answered: go-coap drops a copy
		// that arrives while it still finishes the exchange.
		var again []byte
		for try := 0; try < 10 && again == nil; try++ {
			raw.write(req)
			again = raw.read(300 * time.Millisecond)
		}
		if !bytes.Equal(again, first) {
			t.Fatalf("retransmission %d answered %x, want the cached %x", i, again, first)
		}
	}
	if extra := raw.read(300 * time.Millisecond); extra != nil {
		t.Fatalf("unexpected datagram %x", extra)
	}
	if n := len(f.storedOf("d1")); n != 1 {
		t.Fatalf("stored %d times", n)
	}
	f.mu.Lock()
	calls := f.telemetry
	f.mu.Unlock()
	if calls != 1 {
		t.Fatalf("backend called %d times", calls)
	}
}
