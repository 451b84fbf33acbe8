package amqp

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/go-amqp"
)

// Endpoint connection states reported by GET.
const (
	StateConnected = "connected"
	StateRetrying  = "retrying"
)

// EndpointStatus is an endpoint's definition (URL redacted) with its
// delivery state.
type EndpointStatus struct {
	Endpoint
	State        string `json:"state"`
	Backlog      int    `json:"backlog"`
	BacklogBytes int    `json:"backlogBytes"`
	Delivered    int64  `json:"delivered"`
	Retried      int64  `json:"retried"`
	Dropped      int64  `json:"dropped"`
	DeadLettered int64  `json:"deadLettered"`
	LastError    string `json:"lastError,omitempty"`
}

// worker delivers one endpoint's outbox, oldest first, over one link.
type worker struct {
	svc  *Service
	def  Endpoint
	wake chan struct{} // new messages in the outbox (capacity 1)

	mu    sync.Mutex
	st    EndpointStatus
	stop  context.CancelFunc
	done  chan struct{}
	alive bool
	// dirty holds the devices whose grain outbox may hold entries for this
	// endpoint (bounded by the devices with entries).
	dirty map[string]struct{}
	// tried counts the tries of entries not accepted yet (heads of their
	// devices' outboxes, at most one per device but for a window cut by a
	// failed link).
	tried map[tryKey]int
	// legacyCount and legacyBytes are what the legacy outbox in amqp.db
	// still holds.
	legacyCount, legacyBytes int
	// settling holds, per device, the entries to remove from its outbox
	// (settle.go); settlingSeqs the same entries, to skip them meanwhile.
	settling      map[string]*pendingSettle
	settlingSeqs  map[tryKey]struct{}
	settlingN     int
	settlingSince time.Time
}

func newWorker(svc *Service, def Endpoint, legacyCount, legacyBytes int) *worker {
	w := &worker{svc: svc, def: def, wake: make(chan struct{}, 1), done: make(chan struct{}),
		dirty: map[string]struct{}{}, tried: map[tryKey]int{}, legacyCount: legacyCount, legacyBytes: legacyBytes,
		settling: map[string]*pendingSettle{}, settlingSeqs: map[tryKey]struct{}{}}
	w.st = EndpointStatus{Endpoint: def, State: StateRetrying, Backlog: legacyCount, BacklogBytes: legacyBytes}
	return w
}

// status is the worker's state with the URL redacted.
func (w *worker) status() EndpointStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.st
	st.URL = RedactURL(st.URL)
	return st
}

// admit reserves room for one message of size bytes under the bounds;
// false (and a counted drop) when the outbox is full.
func (w *worker) admit(size int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.svc.cfg.Bounds
	if w.st.Backlog+1 > b.MaxCount || w.st.BacklogBytes+size > b.MaxBytes {
		w.st.Dropped++
		w.svc.m.dropped.WithLabelValues(w.def.Name).Inc()
		return false
	}
	w.st.Backlog++
	w.st.BacklogBytes += size
	w.svc.m.backlog.WithLabelValues(w.def.Name).Set(float64(w.st.Backlog))
	return true
}

func (w *worker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) setState(state string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.st.State != state || err != nil {
		w.svc.log.Info("amqp endpoint", "endpoint", w.def.Name, "url", RedactURL(w.def.URL), "state", state, "err", err)
	}
	w.st.State = state
	if err != nil {
		w.st.LastError = Redact(err.Error())
	}
	up := 0.0
	if state == StateConnected {
		up = 1
	}
	w.svc.m.connected.WithLabelValues(w.def.Name).Set(up)
}

// run delivers until ctx ends: connect, send what the outbox holds, wait
// for more; any link failure closes the connection and retries after a
// backoff.
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	defer func() {
		// What the broker accepted leaves the outbox, if the node still
		// can (else it is sent again: duplicates, never losses).
		fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = w.flushSettle(fctx)
	}()
	bo := backoff{base: w.svc.cfg.BackoffBase, max: w.svc.cfg.BackoffMax}
	for ctx.Err() == nil {
		err := w.session(ctx, &bo)
		if ctx.Err() != nil {
			return
		}
		if w.settleDue(true) {
			// The broker accepted them before the link failed.
			if err := w.flushSettle(ctx); err != nil {
				w.svc.log.Warn("amqp outbox settlement", "endpoint", w.def.Name, "err", err)
			}
		}
		w.setState(StateRetrying, err)
		if !sleep(ctx, bo.next()) {
			return
		}
	}
}

// session is one connection's life: it returns the error that ended it.
func (w *worker) session(ctx context.Context, bo *backoff) error {
	dctx, cancel := context.WithTimeout(ctx, w.svc.cfg.DialTimeout)
	conn, sess, err := dial(dctx, w.def.URL, w.def.CA)
	if err != nil {
		cancel()
		return err
	}
	snd, err := sess.NewSender(dctx, w.def.Address, nil)
	cancel()
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("sender link: %s", Redact(err.Error()))
	}
	defer conn.Close()
	w.setState(StateConnected, nil)
	age := time.NewTicker(time.Second)
	defer age.Stop()
	for {
		n := 0
		if w.hasLegacy() {
			if n, err = w.deliverLegacy(ctx, snd, bo); err != nil {
				return err
			}
		}
		progressed, err := w.deliverDevices(ctx, snd, bo)
		if err != nil {
			return err
		}
		if w.settleDue(n == 0 && !progressed) {
			if err := w.flushSettle(ctx); err != nil {
				w.svc.log.Warn("amqp outbox settlement", "endpoint", w.def.Name, "err", err)
			}
		}
		if n > 0 || progressed {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.wake:
		case <-age.C:
		}
	}
}

// hasLegacy reports whether the legacy outbox may hold entries.
func (w *worker) hasLegacy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.legacyCount > 0
}

// deliverLegacy sends up to Window messages of the legacy outbox (amqp.db,
// written by binaries before the grain outbox) pipelined on the link,
// waits for their outcomes in order and settles that outbox; n is how many
// left it. It stops being called once that outbox is empty.
func (w *worker) deliverLegacy(ctx context.Context, snd *amqp.Sender, bo *backoff) (int, error) {
	entries, err := w.svc.st.peek(w.def.Name, w.svc.cfg.Window)
	if err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		w.mu.Lock()
		w.legacyCount, w.legacyBytes = 0, 0
		w.mu.Unlock()
		return 0, nil
	}
	now := w.svc.cfg.Now()
	var done [][]byte
	var retried, dead []entry
	var aged, doneBytes int
	var sendErr error
	receipts := make([]amqp.SendReceipt, 0, len(entries))
	sent := entries[:0:0]
	for _, e := range entries {
		if w.svc.cfg.Bounds.MaxAge > 0 && now.Sub(e.rec.Enqueued) > w.svc.cfg.Bounds.MaxAge {
			done, aged, doneBytes = append(done, e.key), aged+1, doneBytes+e.len
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, w.svc.cfg.SendTimeout)
		r, err := snd.SendWithReceipt(sctx, w.message(e), nil)
		cancel()
		if err != nil {
			sendErr = fmt.Errorf("send: %s", Redact(err.Error()))
			break
		}
		receipts, sent = append(receipts, r), append(sent, e)
	}
	retryLater := false
	for i, r := range receipts {
		e := sent[i]
		wctx, cancel := context.WithTimeout(ctx, w.svc.cfg.SendTimeout)
		state, err := r.Wait(wctx)
		cancel()
		switch s := state.(type) {
		case *amqp.StateAccepted:
			done, doneBytes = append(done, e.key), doneBytes+e.len
			continue
		case *amqp.StateRejected:
			e.rec.Tries++
			reason := "rejected"
			if s.Error != nil {
				reason = s.Error.Error()
			}
			if e.rec.Tries >= w.svc.cfg.MaxTries {
				e.rec.Error, e.rec.Dead = Redact(reason), now
				dead, doneBytes = append(dead, e), doneBytes+e.len
			} else {
				retried = append(retried, e)
			}
			retryLater = true
			sendErr = fmt.Errorf("broker rejected a message: %s", Redact(reason))
			continue
		}
		if err != nil && sendErr == nil {
			sendErr = fmt.Errorf("settlement: %s", Redact(err.Error()))
		}
		if err == nil {
			retryLater = true // released or modified: the broker will take it later
		}
	}
	if err := w.svc.st.settle(w.def.Name, done, retried, dead); err != nil {
		return 0, err
	}
	w.account(len(done)-aged, aged, len(retried), len(dead), len(done)+len(dead), doneBytes)
	w.mu.Lock()
	w.legacyCount, w.legacyBytes = max(w.legacyCount-len(done)-len(dead), 0), max(w.legacyBytes-doneBytes, 0)
	w.mu.Unlock()
	if sendErr != nil && !retryLater {
		return 0, sendErr // the link failed: reconnect
	}
	if retryLater {
		w.setState(StateConnected, sendErr)
		if !sleep(ctx, bo.next()) {
			return 0, ctx.Err()
		}
		return 0, nil
	}
	bo.reset()
	return len(done), nil
}

// account updates counters and metrics after a batch.
func (w *worker) account(delivered, aged, retried, dead, left, leftBytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.Delivered += int64(delivered)
	w.st.Dropped += int64(aged)
	w.st.Retried += int64(retried)
	w.st.DeadLettered += int64(dead)
	w.st.Backlog = max(w.st.Backlog-left, 0)
	w.st.BacklogBytes = max(w.st.BacklogBytes-leftBytes, 0)
	m, n := w.svc.m, w.def.Name
	m.delivered.WithLabelValues(n).Add(float64(delivered))
	m.dropped.WithLabelValues(n).Add(float64(aged))
	m.retried.WithLabelValues(n).Add(float64(retried))
	m.dead.WithLabelValues(n).Add(float64(dead))
	m.backlog.WithLabelValues(n).Set(float64(w.st.Backlog))
}

// message builds the AMQP message of an outbox entry: the body, the
// properties as application properties and the IoT Hub annotations.
func (w *worker) message(e entry) *amqp.Message {
	// IoT Hub's system properties: the device's message ID, content type
	// and encoding; a message without an ID gets its outbox key.
	var id any = e.rec.MessageID
	if e.rec.MessageID == "" {
		id = fmt.Sprintf("%s-%x", w.def.Name, e.key)
	}
	ct := e.rec.ContentType
	if ct == "" {
		ct = "application/json"
	}
	props := &amqp.MessageProperties{MessageID: id, ContentType: &ct}
	if e.rec.ContentEncoding != "" {
		props.ContentEncoding = &e.rec.ContentEncoding
	}
	m := &amqp.Message{
		// Durable: a broker that restarts keeps what it accepted.
		Header:     &amqp.MessageHeader{Durable: true},
		Data:       [][]byte{e.rec.Body},
		Properties: props,
		Annotations: amqp.Annotations{
			"iothub-connection-device-id": e.rec.Device,
			"iothub-enqueuedtime":         e.rec.Enqueued,
			"iothub-message-source":       e.rec.Source,
		},
	}
	if len(e.rec.Properties) > 0 {
		m.ApplicationProperties = make(map[string]any, len(e.rec.Properties))
		for k, v := range e.rec.Properties {
			m.ApplicationProperties[k] = v
		}
	}
	return m
}
