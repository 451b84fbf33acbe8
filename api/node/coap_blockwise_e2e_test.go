package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// blockwiseObserver observes a resource with go-coap's client and fetches
// the rest of each block-wise notification itself, as RFC 7959 section
// 2.6 describes: a confirmable GET with Block2 and without Observe for
// each further block, each checked against the notification's ETag (a
// changed one restarts the transfer from block 0).
//
// go-coap's own block-wise client (v3.8.0) is not used for that over a
// lossy link: it sends the GET for block 1 inside the Acknowledgement of
// the notification (net/blockwise sendReceivedBlockContinue sets it as the
// response, and udp/client processResponse sends a response to a
// confirmable message piggybacked), and each later block's GET inside the
// Acknowledgement of the previous block. A request in an ACK is invalid
// (RFC 7252 section 4.2), nothing retransmits it, and go-coap's server
// answers it with a confirmable message it never retransmits either
// (udp/client writeMessageAsync drops the retransmission state as soon as
// the datagram is written): one lost datagram stalls the transfer for good.
type blockwiseObserver struct {
	co    *udpclient.Conn
	path  string
	query message.Option
	notes chan note // the latest notification not yet handled

	mu   sync.Mutex
	docs []string // the complete representations, in order
}

// note is what a notification's handler keeps of it (go-coap reuses the
// message once the handler returns).
type note struct {
	body, etag []byte
	more       bool
}

// observeBlockwise registers an observation of path on a new go-coap client
// to addr (its own block-wise handling off) and completes each block-wise
// notification on a goroutine the test's cleanup stops.
func observeBlockwise(t *testing.T, addr, path string, query message.Option) *blockwiseObserver {
	t.Helper()
	co := dialCoAP(t, addr, options.WithBlockwise(false, blockwise.SZX1024, time.Minute))
	o := &blockwiseObserver{co: co, path: path, query: query, notes: make(chan note, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		o.run(ctx)
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	if _, err := co.Observe(rctx, path, o.notified, query); err != nil {
		t.Fatal(err)
	}
	return o
}

// notified keeps the latest notification for run; it never blocks go-coap.
func (o *blockwiseObserver) notified(m *pool.Message) {
	if m.Code() != codes.Content {
		return
	}
	var n note
	if m.Body() != nil {
		n.body, _ = io.ReadAll(m.Body())
	}
	n.etag, _ = m.GetOptionBytes(message.ETag)
	if v, err := m.GetOptionUint32(message.Block2); err == nil {
		_, _, n.more, _ = blockwise.DecodeBlockOption(v)
	}
	select {
	case <-o.notes: // superseded
	default:
	}
	select {
	case o.notes <- n:
	default:
	}
}

// run completes notifications until ctx ends.
func (o *blockwiseObserver) run(ctx context.Context) {
	for {
		var n note
		select {
		case n = <-o.notes:
		case <-ctx.Done():
			return
		}
		doc, err := o.complete(ctx, n)
		if err != nil {
			continue // a newer notification, or the test's end
		}
		o.mu.Lock()
		o.docs = append(o.docs, doc)
		o.mu.Unlock()
	}
}

// complete fetches the blocks after the first one a notification carried.
func (o *blockwiseObserver) complete(ctx context.Context, n note) (string, error) {
	doc, etag, more := n.body, n.etag, n.more
	for more {
		blk, err := blockwise.EncodeBlockOption(blockwise.SZX1024, int64(len(doc)/1024), false)
		if err != nil {
			return "", err
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := o.co.Get(rctx, o.path, message.Option{ID: message.Block2, Value: uintOption(blk)}, o.query)
		cancel()
		if err != nil {
			return "", err
		}
		if res.Code() != codes.Content {
			return "", fmt.Errorf("block %d: %v", len(doc)/1024, res.Code())
		}
		tag, _ := res.GetOptionBytes(message.ETag)
		var b []byte
		if res.Body() != nil {
			b, _ = io.ReadAll(res.Body())
		}
		more = false
		if v, err := res.GetOptionUint32(message.Block2); err == nil {
			_, _, more, _ = blockwise.DecodeBlockOption(v)
		}
		if !bytes.Equal(tag, etag) {
			// The representation changed (RFC 7959 section 2.4): start again.
			doc, etag, more = nil, tag, true
			continue
		}
		doc = append(doc, b...)
	}
	return string(doc), nil
}

// last returns the last complete representation, "" before the first.
func (o *blockwiseObserver) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.docs) == 0 {
		return ""
	}
	return o.docs[len(o.docs)-1]
}

// uintOption encodes a CoAP uint option value (big-endian, no leading
// zeros).
func uintOption(v uint32) []byte {
	var b []byte
	for ; v > 0; v >>= 8 {
		b = append([]byte{byte(v)}, b...)
	}
	return b
}
