package jepsen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync"
	"time"
)

// OpKind is what a twin operation does.
type OpKind int

// The twin operations.
const (
	// Read is GET /api/v1/twins/{id}: it observes desired.v and the ETag.
	Read OpKind = iota
	// Write is an unconditional PATCH of desired.v.
	Write
	// CAS is a PATCH of desired.v with If-Match: the twin version the
	// client expects.
	CAS
)

func (k OpKind) String() string {
	switch k {
	case Read:
		return "read"
	case Write:
		return "write"
	case CAS:
		return "cas"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Status is how an operation ended, as far as its client can tell.
type Status int

// Outcomes.
const (
	// OK: 2xx. The operation took effect (a read observed a state).
	OK Status = iota
	// Failed: the operation certainly did not take effect: a CAS answered
	// 412, a request that never left the client (the dial failed), a read
	// that got no answer.
	Failed
	// Unknown: a write or CAS that timed out or got an error after it was
	// sent (5xx included): it may or may not have taken effect, now or
	// later.
	Unknown
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Input is what a client asked.
type Input struct {
	Kind OpKind
	// Value is the (unique) value a Write or CAS puts in desired.v.
	Value int64
	// Expect is the twin version a CAS sends in If-Match.
	Expect int64
}

// Output is what the client saw.
type Output struct {
	Status Status
	// Value is desired.v in the answer (for a read, and for a successful
	// write or CAS, whose answer is the twin after the change); Missing
	// when the answer had no desired.v.
	Value   int64
	Missing bool
	// Version is the twin version in the answer's ETag.
	Version int64
	// Precondition is true when a CAS answered 412.
	Precondition bool
}

// Op is one completed (or abandoned) twin operation.
type Op struct {
	Twin   string
	Client int    // porcupine client: a worker takes a new one after an Unknown
	Node   string // the node the request was sent to
	Input  Input
	Output Output
	Call   time.Time
	Return time.Time // when the answer (or the error) came
	HTTP   int       // status code, 0 without an answer
	Err    string    // transport error or error body, shortened
}

func (o Op) String() string {
	return fmt.Sprintf("%s %s via %s%s", o.Twin, o.describe(), o.Node, metaDetail(o))
}

// History records twin operations and telemetry messages from many
// goroutines. Its methods are safe for concurrent use.
type History struct {
	mu   sync.Mutex
	ops  []Op
	msgs []*Message
}

// Add records a finished operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns the operations in call order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	out := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call.Before(out[j].Call) })
	return out
}

// AddMessage records a telemetry message the moment it is first sent; its
// client keeps updating it (under the History's lock through Ack).
func (h *History) AddMessage(m *Message) {
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
}

// Ack marks m acknowledged (PUBACK) by node at t.
func (h *History) Ack(m *Message, node string, t time.Time) {
	h.mu.Lock()
	m.Acked, m.AckedAt, m.AckedBy = true, t, node
	h.mu.Unlock()
}

// Attempt counts one more send of m to node.
func (h *History) Attempt(m *Message, node string) {
	h.mu.Lock()
	m.Attempts++
	m.Nodes = append(m.Nodes, node)
	h.mu.Unlock()
}

// Messages returns copies of the telemetry messages.
func (h *History) Messages() []Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Message, len(h.msgs))
	for i, m := range h.msgs {
		out[i] = *m
		out[i].Nodes = append([]string(nil), m.Nodes...)
	}
	return out
}

// Message is one QoS 1 telemetry message with a unique $.mid.
type Message struct {
	Device   string
	MID      string
	Sent     time.Time // first send
	Attempts int
	Nodes    []string // node of each send
	Acked    bool
	AckedAt  time.Time
	AckedBy  string
}

// WriteJSONL writes the twins' initial states, the operations and the
// messages to path, one JSON object a line, times relative to origin in
// seconds ("call", "ret"; an unknown operation's "ret" is when its client
// gave up), for analysis with jq and for ReadJSONL.
func WriteJSONL(path string, init map[string]State, ops []Op, msgs []Message, origin time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	rel := func(t time.Time) float64 { return math.Round(t.Sub(origin).Seconds()*1e6) / 1e6 }
	var twins []string
	for t := range init {
		twins = append(twins, t)
	}
	sort.Strings(twins)
	for _, t := range twins {
		if err := enc.Encode(map[string]any{"init": t, "value": init[t].Value, "version": init[t].Version}); err != nil {
			f.Close()
			return err
		}
	}
	for _, op := range ops {
		rec := map[string]any{"twin": op.Twin, "client": op.Client, "node": op.Node, "op": op.Input.Kind.String(),
			"status": op.Output.Status.String(), "call": rel(op.Call), "ret": rel(op.Return)}
		if op.Input.Kind != Read {
			rec["value"] = op.Input.Value
		}
		if op.Input.Kind == CAS {
			rec["expect"] = op.Input.Expect
		}
		if op.Output.Status == OK {
			rec["seen"], rec["version"] = op.Output.Value, op.Output.Version
			if op.Output.Missing {
				rec["seen"] = nil
			}
		}
		if op.Output.Precondition {
			rec["status"] = "412"
		}
		if op.HTTP != 0 {
			rec["http"] = op.HTTP
		}
		if op.Err != "" {
			rec["err"] = op.Err
		}
		if err := enc.Encode(rec); err != nil {
			f.Close()
			return err
		}
	}
	for _, m := range msgs {
		rec := map[string]any{"device": m.Device, "mid": m.MID, "sent": rel(m.Sent), "sends": m.Attempts, "nodes": m.Nodes, "acked": m.Acked}
		if m.Acked {
			rec["ackedAt"], rec["ackedBy"] = rel(m.AckedAt), m.AckedBy
		}
		if err := enc.Encode(rec); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// record is one line of a history file, as WriteJSONL writes it.
type record struct {
	Init    string   `json:"init"`
	Twin    string   `json:"twin"`
	Client  int      `json:"client"`
	Node    string   `json:"node"`
	Op      string   `json:"op"`
	Status  string   `json:"status"`
	Call    float64  `json:"call"`
	Ret     float64  `json:"ret"`
	Value   int64    `json:"value"`
	Expect  int64    `json:"expect"`
	Seen    *int64   `json:"seen"`
	Version int64    `json:"version"`
	HTTP    int      `json:"http"`
	Err     string   `json:"err"`
	Device  string   `json:"device"`
	MID     string   `json:"mid"`
	Sent    float64  `json:"sent"`
	Sends   int      `json:"sends"`
	Nodes   []string `json:"nodes"`
	Acked   bool     `json:"acked"`
	AckedAt float64  `json:"ackedAt"`
	AckedBy string   `json:"ackedBy"`
}

// ReadJSONL reads a history file written by WriteJSONL back; times are
// relative to origin again.
func ReadJSONL(path string, origin time.Time) (init map[string]State, ops []Op, msgs []Message, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	at := func(sec float64) time.Time { return origin.Add(time.Duration(sec * 1e9)) }
	kinds := map[string]OpKind{"read": Read, "write": Write, "cas": CAS}
	init = map[string]State{}
	dec := json.NewDecoder(bufio.NewReader(f))
	for line := 1; ; line++ {
		var r record
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: record %d: %w", path, line, err)
		}
		switch {
		case r.Init != "":
			init[r.Init] = State{Value: r.Value, Version: r.Version}
		case r.MID != "":
			msgs = append(msgs, Message{Device: r.Device, MID: r.MID, Sent: at(r.Sent), Attempts: r.Sends, Nodes: r.Nodes,
				Acked: r.Acked, AckedAt: at(r.AckedAt), AckedBy: r.AckedBy})
		default:
			kind, ok := kinds[r.Op]
			if !ok {
				return nil, nil, nil, fmt.Errorf("%s: record %d: unknown op %q", path, line, r.Op)
			}
			op := Op{Twin: r.Twin, Client: r.Client, Node: r.Node, Input: Input{Kind: kind, Value: r.Value, Expect: r.Expect},
				Call: at(r.Call), Return: at(r.Ret), HTTP: r.HTTP, Err: r.Err}
			switch r.Status {
			case "ok":
				op.Output = Output{Status: OK, Version: r.Version, Missing: r.Seen == nil}
				if r.Seen != nil {
					op.Output.Value = *r.Seen
				}
			case "412":
				op.Output = Output{Status: Failed, Precondition: true}
			case "failed":
				op.Output = Output{Status: Failed}
			case "unknown":
				op.Output = Output{Status: Unknown}
			default:
				return nil, nil, nil, fmt.Errorf("%s: record %d: unknown status %q", path, line, r.Status)
			}
			ops = append(ops, op)
		}
	}
	return init, ops, msgs, nil
}
