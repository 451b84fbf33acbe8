package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

func sessions(n int) []Session {
	out := make([]Session, n)
	for i := range out {
		out[i] = Session{ClientID: "dev-" + strconv.Itoa(i)}
	}
	return out
}

// Sessions opened from two source addresses on 127.0.0.0/8 against a bare
// broker all stay open and answer pings; the broker saw each one publish.
func TestHoldOpensChecksAndCloses(t *testing.T) {
	addr, stop, err := StartBareBroker(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var progress int
	h, st := Open(context.Background(), HoldConfig{Brokers: []string{addr}, Sessions: sessions(60), Rate: 100,
		Sources:  []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)},
		Progress: func(HoldStatus) { progress++ }})
	defer h.Close()
	if st.Connected != 60 || st.Failed != 0 || st.GaveUp {
		t.Fatalf("status %+v", st)
	}
	// A burst of 5, then 55 at 100/s: over half a second, so the 250 ms
	// progress ticker fires at least twice before the final report.
	if st.Elapsed < 450*time.Millisecond {
		t.Errorf("60 sessions at 100/s took %v", st.Elapsed)
	}
	if progress < 3 {
		t.Errorf("%d progress reports, want the ticks and the final one", progress)
	}
	if alive := h.Check(context.Background(), 5*time.Second); alive != 60 {
		t.Errorf("%d of 60 sessions answered a ping", alive)
	}
	srcs := map[string]bool{}
	for _, c := range h.conns {
		srcs[c.c.LocalAddr().(*net.TCPAddr).IP.String()] = true
	}
	if !srcs["127.0.0.2"] || !srcs["127.0.0.3"] || len(srcs) != 2 {
		t.Errorf("source addresses used: %v", srcs)
	}
}

// A broker that refuses every session, and an address where nothing
// listens: Open stops after MaxFailures and says why, without hanging.
func TestHoldReportsRefusals(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}) // no auth hook: refuses all
	if err := s.AddListener(listeners.NewNet("refusing", ln)); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	for _, tc := range []struct {
		name, addr, reason string
	}{
		{"CONNACK refusal", ln.Addr().String(), "connack"},
		{"nothing listening", deadAddr, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, st := Open(context.Background(), HoldConfig{Brokers: []string{tc.addr}, Sessions: sessions(500), MaxFailures: 20, Concurrency: 4})
			h.Close()
			if !st.GaveUp || st.Connected != 0 || st.Failed < 20 || st.Failed > 24 || st.Reasons[tc.reason] != st.Failed || st.FirstError == "" {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// A node that accepts TCP connections but never answers CONNECT (a
// listener at its open-file limit leaves them in the accept queue): each
// session times out.
func TestHoldTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h, st := Open(context.Background(), HoldConfig{Brokers: []string{ln.Addr().String()}, Sessions: sessions(3),
		Timeout: 200 * time.Millisecond})
	h.Close()
	if st.Failed != 3 || st.Reasons["timeout"] != 3 {
		t.Fatalf("status %+v", st)
	}
}

// The client's CONNECT and PUBLISH decode as such with mochi's packet
// decoder, and readPacket reads what mochi encodes.
func TestPacketsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		typ  byte
	}{
		{"connect", encodeConnect(Session{ClientID: "d1", Username: "h/d1/?api-version=1", Password: "SharedAccessSignature sr=x"}), packets.Connect},
		{"connect without credentials", encodeConnect(Session{ClientID: "d2"}), packets.Connect},
		{"publish", encodePublish("devices/d1/messages/events/", bytes.Repeat([]byte("x"), 300), 7), packets.Publish},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, body, err := readPacket(bufio.NewReader(bytes.NewReader(tc.raw)), maxServerPacket)
			if err != nil || typ != tc.typ {
				t.Fatalf("type %d, err %v", typ, err)
			}
			var fh packets.FixedHeader
			if err := fh.Decode(tc.raw[0]); err != nil {
				t.Fatal(err)
			}
			pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
			fh.Remaining = len(body)
			switch typ {
			case packets.Connect:
				err = pk.ConnectDecode(body)
				if err == nil && (pk.Connect.ClientIdentifier == "" || !pk.Connect.Clean || pk.Connect.Keepalive != holdKeepalive) {
					err = errors.New("fields lost")
				}
			case packets.Publish:
				err = pk.PublishDecode(body)
				if err == nil && (pk.PacketID != 7 || len(pk.Payload) != 300 || pk.FixedHeader.Qos != 1) {
					err = errors.New("fields lost")
				}
			}
			if err != nil {
				t.Fatalf("mochi decodes %+v: %v", pk, err)
			}
		})
	}
	var buf bytes.Buffer
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 0x1234}
	if err := ack.PubackEncode(&buf); err != nil {
		t.Fatal(err)
	}
	typ, body, err := readPacket(bufio.NewReader(&buf), maxServerPacket)
	if err != nil || typ != pktPuback || !bytes.Equal(body, []byte{0x12, 0x34}) {
		t.Fatalf("PUBACK read as type %d body %x err %v", typ, body, err)
	}
}

func TestReadPacketErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"reserved type", []byte{0x00, 0x00}, ErrMalformed},
		{"length over 4 bytes", []byte{0x20, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMalformed},
		{"over the limit", []byte{0x30, 0x80, 0x80, 0x01}, ErrMalformed},
		{"short body", []byte{0x20, 0x02, 0x00}, io.ErrUnexpectedEOF},
		{"short length", []byte{0x20, 0x80}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readPacket(bufio.NewReader(bytes.NewReader(tc.raw)), 1024)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzReadPacket(f *testing.F) {
	f.Add([]byte{0x20, 0x02, 0x00, 0x00})
	f.Add([]byte{0x40, 0x02, 0x12, 0x34, 0xd0, 0x00})
	f.Add(encodePublish("t", []byte("p"), 1))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := bufio.NewReader(bytes.NewReader(raw))
		for {
			typ, body, err := readPacket(r, 4096)
			if err != nil {
				return
			}
			if typ == 0 || len(body) > 4096 {
				t.Fatalf("type %d with %d bytes accepted", typ, len(body))
			}
		}
	})
}
