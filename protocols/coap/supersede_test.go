package coap

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// rawObserver is an observer speaking CoAP by hand: it decides which
// notifications it acknowledges, and fetches the blocks of a block-wise
// notification itself, as RFC 7959 section 2.6 describes.
type rawObserver struct {
	t   *testing.T
	raw *rawConn
	tok string
	mid uint16
}

func newRawObserver(t *testing.T, s *Server, device string) *rawObserver {
	o := &rawObserver{t: t, raw: dialRaw(t, s.Addr()), tok: token(t, device, time.Hour), mid: 100}
	o.raw.write(encode(t, message.Confirmable, codes.GET, o.mid, []byte{0xa},
		pathOpts("devices/"+device+"/twin/desired", message.Option{ID: message.Observe}, sasOpt(o.tok)), nil))
	m := o.next(5 * time.Second)
	if _, err := m.Observe(); err != nil || m.Code() != codes.Content || m.MessageID() != int32(o.mid) {
		t.Fatalf("registration answered %v", m)
	}
	return o
}

// next returns the next message from the node; it fails after d.
func (o *rawObserver) next(d time.Duration) *pool.Message {
	o.t.Helper()
	b := o.raw.read(d)
	if b == nil {
		o.t.Fatalf("nothing from the node in %v", d)
	}
	return decode(o.t, b)
}

// notification returns the next confirmable notification, skipping
// anything else.
func (o *rawObserver) notification(d time.Duration) *pool.Message {
	o.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := o.next(time.Until(deadline))
		if _, err := m.Observe(); err == nil && m.Type() == message.Confirmable {
			return m
		}
	}
}

func (o *rawObserver) ack(m *pool.Message) {
	o.raw.write(encode(o.t, message.Acknowledgement, codes.Empty, uint16(m.MessageID()), nil, nil, nil))
}

// fetch completes the representation a block-wise notification m starts:
// GET with Block2 and no Observe for each further block, each of which
// must carry the ETag of m.
func (o *rawObserver) fetch(device string, m *pool.Message) string {
	o.t.Helper()
	etag, _ := m.GetOptionBytes(message.ETag)
	doc := []byte(body(o.t, m))
	for more := blockMore(o.t, m); more; {
		o.mid++
		blk, err := blockwise.EncodeBlockOption(blockwise.SZX1024, int64(len(doc)/1024), false)
		if err != nil {
			o.t.Fatal(err)
		}
		o.raw.write(encode(o.t, message.Confirmable, codes.GET, o.mid, []byte{0xb, byte(o.mid)},
			pathOpts("devices/"+device+"/twin/desired", message.Option{ID: message.Block2, Value: uintBytes(blk)}, sasOpt(o.tok)), nil))
		r := o.next(5 * time.Second)
		for r.MessageID() != int32(o.mid) { // a notification meanwhile
			r = o.next(5 * time.Second)
		}
		if got, _ := r.GetOptionBytes(message.ETag); r.Code() != codes.Content || !bytes.Equal(got, etag) {
			o.t.Fatalf("block %d: %v, ETag %x, want %x", len(doc)/1024, r.Code(), got, etag)
		}
		doc = append(doc, body(o.t, r)...)
		more = blockMore(o.t, r)
	}
	return string(doc)
}

func blockMore(t *testing.T, m *pool.Message) bool {
	v, err := m.GetOptionUint32(message.Block2)
	if err != nil {
		return false
	}
	_, _, more, err := blockwise.DecodeBlockOption(v)
	if err != nil {
		t.Fatal(err)
	}
	return more
}

// A change supersedes a notification still waiting for its
// acknowledgement (RFC 7641 section 4.5.2): an observer whose
// acknowledgement of a block-wise notification was lost gets the next
// representation after one acknowledgement timeout, not after the old
// notification's whole retransmission window (which held back every
// change meanwhile, issue 15's block-wise-under-loss defect), and
// completes it block by block.
func TestChangeSupersedesUnacknowledgedNotification(t *testing.T) {
	f := newFake("d1")
	const ackTimeout = 200 * time.Millisecond
	s := startServer(t, f, func(c *Config) {
		c.AckTimeout = ackTimeout
		c.MaxRetransmit = 4 // a window of 9.3 s
	})
	o := newRawObserver(t, s, "d1")
	doc := func(v int) string {
		return fmt.Sprintf(`{"$version":%d,"blob":"%s"}`, v, strings.Repeat(fmt.Sprint(v), 3000))
	}
	f.desiredChanged(s, "d1", doc(2))
	first := o.notification(5 * time.Second) // its acknowledgement is "lost"
	if !blockMore(t, first) {
		t.Fatalf("the notification of a 3 KB document is not block-wise: %v", first)
	}
	f.desiredChanged(s, "d1", doc(3))
	start := time.Now()
	var next *pool.Message
	for next == nil || next.MessageID() == first.MessageID() { // skip retransmissions
		next = o.notification(3 * time.Second)
	}
	if waited := time.Since(start); waited > 5*ackTimeout {
		t.Fatalf("the new representation came after %v", waited)
	}
	o.ack(next)
	if got := o.fetch("d1", next); got != doc(3) {
		t.Fatalf("assembled %d bytes, want the %d of the new document", len(got), len(doc(3)))
	}
	seq1, _ := first.Observe()
	seq2, _ := next.Observe()
	if seq2 <= seq1 {
		t.Fatalf("sequence numbers %d then %d", seq1, seq2)
	}
	// The superseded notification is not retransmitted any more.
	for b := o.raw.read(4 * ackTimeout); b != nil; b = o.raw.read(4 * ackTimeout) {
		if m := decode(t, b); m.MessageID() == first.MessageID() {
			t.Fatal("the superseded notification is still retransmitted")
		}
	}
	if s.obs.len() != 1 {
		t.Fatal("the acknowledging observer was dropped")
	}
}

// An observer that acknowledges nothing is dropped after the
// retransmission window of its first unacknowledged notification, even
// while changes keep superseding its notifications.
func TestSilentObserverDroppedDespiteChanges(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, func(c *Config) {
		c.AckTimeout = 50 * time.Millisecond
		c.MaxRetransmit = 2 // a window of 525 ms
	})
	o := newRawObserver(t, s, "d1")
	eventually(t, "the observer", func() bool { return s.obs.len() == 1 })
	start := time.Now()
	for v := 2; s.obs.len() == 1; v++ {
		if time.Since(start) > 5*time.Second {
			t.Fatal("a silent observer kept through changes")
		}
		f.desiredChanged(s, "d1", fmt.Sprintf(`{"$version":%d}`, v))
		_ = o.raw.read(30 * time.Millisecond)
	}
}
