package entity

import (
	"context"
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// Telemetry flush policy: the twin document is rewritten at least this often
// while telemetry flows (it is always written with any other change).
const (
	flushEvery    = 1000
	flushInterval = 30 * time.Second
)

// midWindow is how many recent message IDs a device remembers, so that a
// retransmission (its PUBACK was lost, perhaps with the node it was
// connected to) is acknowledged without being stored twice.
const midWindow = 4096

// midSet is a bounded set of recent message IDs. It is read from the warm
// store on the first message that carries an ID, so activations of devices
// that send none pay nothing.
type midSet struct {
	loaded bool
	ids    map[string]struct{}
	ring   []string
	next   int
}

func (m *midSet) has(id string) bool { _, ok := m.ids[id]; return ok }

func (m *midSet) add(id string) {
	if id == "" {
		return
	}
	if m.ids == nil {
		m.ids = make(map[string]struct{}, 64)
	}
	if _, ok := m.ids[id]; ok {
		return
	}
	if len(m.ring) < midWindow {
		m.ring = append(m.ring, id)
	} else {
		delete(m.ids, m.ring[m.next])
		m.ring[m.next] = id
		m.next = (m.next + 1) % midWindow
	}
	m.ids[id] = struct{}{}
}

// loadMIDs remembers the message IDs of the newest stored records.
func (c *Core) loadMIDs(ctx context.Context) error {
	recs, err := c.r.Telemetry(ctx, c.st.ID, time.Time{}, midWindow)
	if err != nil {
		return errcode.New(errcode.Unavailable, "recent message ids of %s: %v", c.st.ID, err)
	}
	m := &midSet{loaded: true}
	for i := len(recs) - 1; i >= 0; i-- {
		m.add(recs[i].MessageID)
	}
	c.st.mids = m
	return nil
}

// Points decodes the typed points of a telemetry message.
func Points(pts []*actorspb.Point) map[string]any {
	if len(pts) == 0 {
		return nil
	}
	out := make(map[string]any, len(pts))
	for _, p := range pts {
		switch v := p.Value.(type) {
		case *actorspb.Point_Number:
			out[p.Name] = v.Number
		case *actorspb.Point_Flag:
			out[p.Name] = v.Flag
		case *actorspb.Point_Text:
			out[p.Name] = v.Text
		}
	}
	return out
}

// PointsProto encodes points (float64, bool or string values; others are
// dropped) as typed points.
func PointsProto(points map[string]any) []*actorspb.Point {
	out := make([]*actorspb.Point, 0, len(points))
	for k, v := range points {
		switch x := v.(type) {
		case float64:
			out = append(out, &actorspb.Point{Name: k, Value: &actorspb.Point_Number{Number: x}})
		case bool:
			out = append(out, &actorspb.Point{Name: k, Value: &actorspb.Point_Flag{Flag: x}})
		case string:
			out = append(out, &actorspb.Point{Name: k, Value: &actorspb.Point_Text{Text: x}})
		}
	}
	return out
}

// telemetry stores one message: the warm-store record is the durable copy
// and the twin document follows in batches (flushEvery, flushInterval,
// or with any other change).
func (c *Core) telemetry(ctx context.Context, now time.Time, in *actorspb.Telemetry) *Result {
	if in.MessageId != "" {
		if c.st.mids == nil || !c.st.mids.loaded {
			if err := c.loadMIDs(ctx); err != nil {
				return fail(err)
			}
		}
		if c.st.mids.has(in.MessageId) {
			// A retransmission of a message already stored: acknowledge it
			// again, store nothing.
			return (&Result{}).reply(&actorspb.Response{Version: c.st.Twin.Version()})
		}
	}
	ts := now
	if in.TsUnixNano != 0 {
		ts = time.Unix(0, in.TsUnixNano).UTC()
	}
	// Strictly increasing per device, so replay order is unambiguous.
	if !ts.After(c.st.lastTS) {
		ts = c.st.lastTS.Add(time.Nanosecond)
	}
	points := Points(in.Points)
	if err := c.st.Twin.CheckPoints(points, c.cfg.Limits); err != nil {
		// Refused whole: nothing of it is stored, so a twin and the
		// rollups above it hold only points within the limits.
		return fail(mapTwinErr(err))
	}
	d := c.draft()
	res := &Result{what: "telemetry of"}
	if points != nil {
		var err error
		if points, err = c.pluginTelemetry(ctx, now, d, res, points); err != nil {
			return fail(err)
		}
	}
	rec := record.TelemetryRecord{TS: ts, Points: points, Raw: in.Raw, ContentType: in.ContentType,
		Properties: in.Properties, MessageID: in.MessageId}
	res.Ops = append(res.Ops, Op{Kind: OpAppendTelemetry, Key: d.ID, Telemetry: rec})
	var data []byte
	if len(points) > 0 {
		d.ownTwin()
		if d.Twin.MergeTelemetry(points, ts) {
			d.unflushed++
		}
		data = telemetryEventJSON(ts, points)
	} else {
		data, _ = json.Marshal(struct {
			TS          time.Time `json:"ts"`
			ContentType string    `json:"contentType"`
			Size        int       `json:"size"`
		}{ts, in.ContentType, len(in.Raw)})
	}
	ev := c.event(d, EventTelemetry, data, ts)
	ev.Telemetry = in
	res.Events = append(res.Events, ev)
	// The rollup contribution changes with the latest values: it is written
	// in the same commit, and the ancestors are told after a short delay.
	if len(points) > 0 && c.contribOps(d, res) {
		c.scheduleRollup(now, res)
	}
	if d.unflushed >= flushEvery || (d.unflushed > 0 && now.Sub(d.lastFlush) >= flushInterval) {
		op, err := twinOp(d)
		if err != nil {
			return fail(err)
		}
		res.Ops = append(res.Ops, op)
		d.unflushed, d.lastFlush = 0, now
	}
	d.lastTS = ts
	res.next = d
	if mid := in.MessageId; mid != "" {
		res.commit = append(res.commit, func(st *State) { st.mids.add(mid) })
	}
	if len(points) > 0 {
		res.then = append(res.then, func(ctx context.Context, now time.Time) *Result {
			return c.evaluate(ctx, now, points)
		})
	}
	res.Reply = &actorspb.Response{Version: d.Twin.Version()}
	return res
}
