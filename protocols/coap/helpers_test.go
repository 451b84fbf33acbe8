package coap

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// Keys of the fake registry's devices (base64, as the registry hands out).
const (
	key1 = "cHJpbWFyeS1rZXktb2YtdGhlLWRldmljZS0wMDE="
	key2 = "c2Vjb25kYXJ5LWtleS1vZi10aGUtZGV2aWNlLTAx"
)

// fakeBackend is an in-memory Backend.
type fakeBackend struct {
	mu        sync.Mutex
	ids       map[string]Identity
	gateways  map[string]string // device → the gateway it is connected via
	stored    map[string][]Telemetry
	desired   map[string]json.RawMessage
	reported  map[string]json.RawMessage
	repV      map[string]int64
	inbox     map[string][]Message
	sessions  []sessionCall
	telDelay  time.Duration
	telemetry int // calls, including refused ones
}

type sessionCall struct {
	device, proto string
	connected     bool
}

func newFake(devices ...string) *fakeBackend {
	f := &fakeBackend{ids: map[string]Identity{}, gateways: map[string]string{}, stored: map[string][]Telemetry{},
		desired: map[string]json.RawMessage{}, reported: map[string]json.RawMessage{}, repV: map[string]int64{},
		inbox: map[string][]Message{}}
	for _, d := range devices {
		f.ids[d] = Identity{DeviceID: d, PrimaryKey: key1, SecondaryKey: key2, Enabled: true}
		f.desired[d] = json.RawMessage(`{"$version":1}`)
		f.reported[d] = json.RawMessage(`{"$version":1}`)
	}
	return f
}

func (f *fakeBackend) Identity(_ context.Context, id string) (Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	idn, ok := f.ids[id]
	if !ok {
		return Identity{}, errcode.New(errcode.NotFound, "device %s", id)
	}
	return idn, nil
}

func (f *fakeBackend) MayActFor(_ context.Context, gw, dev string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gateways[dev] == gw, nil
}

func (f *fakeBackend) Telemetry(ctx context.Context, id string, m Telemetry) error {
	f.mu.Lock()
	f.telemetry++
	delay := f.telDelay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ids[id]; !ok {
		return errcode.New(errcode.NotFound, "device %s", id)
	}
	f.stored[id] = append(f.stored[id], m)
	return nil
}

func (f *fakeBackend) GetTwin(_ context.Context, id string) (json.RawMessage, json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ids[id]; !ok {
		return nil, nil, errcode.New(errcode.NotFound, "device %s", id)
	}
	return f.desired[id], f.reported[id], nil
}

func (f *fakeBackend) PatchReported(_ context.Context, id string, patch []byte) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !json.Valid(patch) {
		return 0, errcode.New(errcode.BadRequest, "not JSON")
	}
	f.repV[id]++
	f.reported[id] = append(json.RawMessage(nil), patch...)
	return f.repV[id], nil
}

func (f *fakeBackend) SetSession(_ context.Context, id string, connected bool, proto string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions = append(f.sessions, sessionCall{id, proto, connected})
	return nil
}

func (f *fakeBackend) PendingMessages(_ context.Context, id string) ([]Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.inbox[id]), nil
}

func (f *fakeBackend) CompleteMessage(_ context.Context, id, msg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range f.inbox[id] {
		if m.ID == msg {
			f.inbox[id] = slices.Delete(f.inbox[id], i, i+1)
			return nil
		}
	}
	return errcode.New(errcode.NotFound, "message %s", msg)
}

func (f *fakeBackend) storedOf(id string) []Telemetry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.stored[id])
}

func (f *fakeBackend) lastSession(id string) (sessionCall, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.sessions) - 1; i >= 0; i-- {
		if f.sessions[i].device == id {
			return f.sessions[i], true
		}
	}
	return sessionCall{}, false
}

// startServer runs a Server with both listeners on loopback.
func startServer(t *testing.T, f *fakeBackend, tweak func(*Config)) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", DTLSAddr: "127.0.0.1:0", Registerer: prometheus.NewRegistry(),
		PresenceWindow: time.Minute, MessageRate: 1e6, Burst: 1e6}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// token returns a SAS token for device signed with its primary key.
func token(t *testing.T, device string, ttl time.Duration) string {
	t.Helper()
	tok, err := sas.Sign("hub.test/devices/"+device, key1, time.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func sasOpt(tok string) message.Option {
	return message.Option{ID: message.URIQuery, Value: []byte("sas=" + tok)}
}

// dial opens a plain CoAP client to s.
func dial(t *testing.T, s *Server, opts ...udp.Option) *udpclient.Conn {
	t.Helper()
	co, err := udp.Dial(s.Addr(), append([]udp.Option{options.WithErrors(func(error) {})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Close() })
	return co
}

// dialDTLS opens a DTLS-PSK client to s, handshaking within 5 s (go-coap
// would handshake on the first write, without a deadline).
func dialDTLS(s *Server, identity, key string) (*udpclient.Conn, error) {
	c, err := net.Dial("udp", s.DTLSAddr())
	if err != nil {
		return nil, err
	}
	conn, err := piondtls.ClientWithOptions(dtlsnet.PacketConnFromConn(c), c.RemoteAddr(),
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return coapdtls.Client(conn, options.WithErrors(func(error) {}), options.WithCloseSocket()), nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func body(t *testing.T, m *pool.Message) string {
	t.Helper()
	if m.Body() == nil {
		return ""
	}
	b, err := io.ReadAll(m.Body())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func post(t *testing.T, co *udpclient.Conn, path, payload string, opts ...message.Option) *pool.Message {
	t.Helper()
	res, err := co.Post(ctxT(t), path, message.AppJSON, bytes.NewReader([]byte(payload)), opts...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return res
}

func wantCode(t *testing.T, m *pool.Message, want codes.Code) {
	t.Helper()
	if m.Code() != want {
		t.Fatalf("code %v, want %v (payload %q)", m.Code(), want, body(t, m))
	}
}

// eventually polls cond every 10 ms until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// desiredChanged changes a device's desired properties and tells s.
func (f *fakeBackend) desiredChanged(s *Server, id, doc string) {
	f.mu.Lock()
	f.desired[id] = json.RawMessage(doc)
	f.mu.Unlock()
	s.HandleEvent(actors.Event{Type: actors.EventTwin, Entity: id, Section: "desired"})
}

// send enqueues a cloud-to-device message and tells s.
func (f *fakeBackend) send(s *Server, id string, m Message) {
	f.mu.Lock()
	f.inbox[id] = append(f.inbox[id], m)
	f.mu.Unlock()
	s.HandleEvent(actors.Event{Type: actors.EventInbox, Entity: id})
}

// rawConn is a UDP socket speaking CoAP by hand, for what a client library
// hides (retransmitting a datagram as is, never acknowledging).
type rawConn struct {
	t *testing.T
	c *net.UDPConn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next datagram, or nil after d.
func (r *rawConn) read(d time.Duration) []byte {
	buf := make([]byte, 65536)
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	n, err := r.c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// encode builds a datagram.
func encode(t *testing.T, typ message.Type, code codes.Code, mid uint16, token []byte, opts message.Options, payload []byte) []byte {
	t.Helper()
	m := pool.NewMessage(context.Background())
	m.SetType(typ)
	m.SetCode(code)
	m.SetMessageID(int32(mid))
	m.SetToken(token)
	for _, o := range opts {
		m.AddOptionBytes(o.ID, o.Value)
	}
	if payload != nil {
		m.SetBody(bytes.NewReader(payload))
	}
	b, err := m.MarshalWithEncoder(coderOf())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode parses a datagram.
func decode(t *testing.T, b []byte) *pool.Message {
	t.Helper()
	m := pool.NewMessage(context.Background())
	if _, err := m.UnmarshalWithDecoder(coderOf(), b); err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return m
}

// pathOpts returns the Uri-Path options of path and the given extra ones.
func pathOpts(path string, extra ...message.Option) message.Options {
	var opts message.Options
	for _, seg := range bytes.Split([]byte(path), []byte("/")) {
		opts = append(opts, message.Option{ID: message.URIPath, Value: seg})
	}
	return append(opts, extra...)
}

func coderOf() *coder.Coder { return coder.DefaultCoder }

// dialAddr opens a plain CoAP client to addr (a proxy, say) that checks
// its retransmissions every 50 ms (go-coap's default is every 4 s).
func dialAddr(t *testing.T, addr string, opts ...udp.Option) *udpclient.Conn {
	t.Helper()
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	co, err := udp.Dial(addr, append([]udp.Option{options.WithErrors(func(error) {}),
		options.WithPeriodicRunner(periodic.New(stop, 50*time.Millisecond))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Close() })
	return co
}

func jsonReader(v any) io.ReadSeeker {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}
