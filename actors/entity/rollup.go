package entity

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// Edges along which contributions flow. A contains contribution carries
// the child's whole subtree and propagates further up; a via contribution
// (device → gateway) counts only in the gateway's own rollup.
const (
	edgeContains = 0
	edgeVia      = 1
)

var edgeNames = [2]string{"c", "v"}

func edgeOf(name string) (int, bool) {
	switch name {
	case "c":
		return edgeContains, true
	case "v":
		return edgeVia, true
	}
	return 0, false
}

// Contribution is what one child adds to an ancestor's rollup: device
// counts, open alerts with the worst severity rank, and per numeric
// telemetry point the aggregate of the latest values beneath. Its JSON form
// is what the contrib bucket stores.
type Contribution struct {
	Devices   int                 `json:"devices"`
	Connected int                 `json:"connected"`
	Alerts    int                 `json:"alerts,omitempty"`
	Worst     int                 `json:"worst,omitempty"`
	Points    map[string]PointAgg `json:"points,omitempty"`
}

// PointAgg aggregates the latest values of one point over a subtree.
type PointAgg struct {
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Sum   float64 `json:"sum"`
	Count int     `json:"count"`
}

func (c *Contribution) add(o Contribution) {
	c.Devices += o.Devices
	c.Connected += o.Connected
	c.Alerts += o.Alerts
	c.Worst = max(c.Worst, o.Worst)
	for k, p := range o.Points {
		if c.Points == nil {
			c.Points = map[string]PointAgg{}
		}
		q, ok := c.Points[k]
		if !ok {
			c.Points[k] = p
			continue
		}
		q.Min, q.Max = min(q.Min, p.Min), max(q.Max, p.Max)
		q.Sum += p.Sum
		q.Count += p.Count
		c.Points[k] = q
	}
}

// encode returns the JSON form of c, byte for byte what encoding/json
// writes (a stored contribution is compared with a new one as a string).
// It is written by hand because every numeric telemetry message encodes
// its device's contribution: encoding/json's reflection over the points
// map was 9 % of the grain path's allocations. Point names that JSON must
// escape, and values it refuses, take encoding/json's own path.
func (c Contribution) encode() string {
	var names [16]string
	keys := names[:0]
	for k, p := range c.Points {
		if !plainJSON(k) || !finite(p.Min) || !finite(p.Max) || !finite(p.Sum) {
			b, _ := json.Marshal(c)
			return string(b)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, 40+64*len(keys))
	b = append(b, `{"devices":`...)
	b = strconv.AppendInt(b, int64(c.Devices), 10)
	b = append(b, `,"connected":`...)
	b = strconv.AppendInt(b, int64(c.Connected), 10)
	if c.Alerts != 0 {
		b = append(b, `,"alerts":`...)
		b = strconv.AppendInt(b, int64(c.Alerts), 10)
	}
	if c.Worst != 0 {
		b = append(b, `,"worst":`...)
		b = strconv.AppendInt(b, int64(c.Worst), 10)
	}
	if len(keys) > 0 {
		b = append(b, `,"points":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			p := c.Points[k]
			b = append(b, '"')
			b = append(b, k...)
			b = append(b, `":{"min":`...)
			b = appendJSONFloat(b, p.Min)
			b = append(b, `,"max":`...)
			b = appendJSONFloat(b, p.Max)
			b = append(b, `,"sum":`...)
			b = appendJSONFloat(b, p.Sum)
			b = append(b, `,"count":`...)
			b = strconv.AppendInt(b, int64(p.Count), 10)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	return string(b)
}

// Proto returns the wire form of c along edge.
func (c Contribution) proto(edge int, removed bool) *actorspb.Contribution {
	p := &actorspb.Contribution{Edge: edgeNames[edge], Removed: removed, Devices: int64(c.Devices),
		Connected: int64(c.Connected), Alerts: int64(c.Alerts), Worst: int32(c.Worst)}
	if len(c.Points) > 0 {
		p.Points = make(map[string]*actorspb.PointAgg, len(c.Points))
		for k, v := range c.Points {
			p.Points[k] = &actorspb.PointAgg{Min: v.Min, Max: v.Max, Sum: v.Sum, Count: int64(v.Count)}
		}
	}
	return p
}

func contributionOf(p *actorspb.Contribution) Contribution {
	c := Contribution{Devices: int(p.Devices), Connected: int(p.Connected), Alerts: int(p.Alerts), Worst: int(p.Worst)}
	if len(p.Points) > 0 {
		c.Points = make(map[string]PointAgg, len(p.Points))
		for k, v := range p.Points {
			c.Points[k] = PointAgg{Min: v.GetMin(), Max: v.GetMax(), Sum: v.GetSum(), Count: int(v.GetCount())}
		}
	}
	return c
}

// ContribKey is the contrib bucket key of child's contribution to parent.
func ContribKey(parent string, edge int, child string) string {
	return parent + "/" + edgeNames[edge] + "/" + child
}

func splitContribKey(rest string) (edge int, child string, ok bool) {
	if len(rest) < 3 || rest[1] != '/' {
		return 0, "", false
	}
	e, ok := edgeOf(rest[:1])
	return e, rest[2:], ok
}

// selfContribution is what the entity alone adds: one device with its
// latest numeric telemetry when it is a device, and its open alerts.
func (c *Core) selfContribution(d *State) Contribution {
	var con Contribution
	if d.Twin == nil {
		return con
	}
	if d.Twin.HasAlerts() {
		var refs []alertRef
		_ = json.Unmarshal(d.Twin.Alerts(), &refs)
		for _, r := range refs {
			con.Alerts++
			con.Worst = max(con.Worst, rules.SeverityRank(r.Severity))
		}
	}
	if !c.isDevice() {
		return con
	}
	con.Devices = 1
	if d.Twin.Connection().State == "connected" {
		con.Connected = 1
	}
	d.Twin.NumericPoints(func(k string, v float64) {
		if con.Points == nil {
			con.Points = map[string]PointAgg{}
		}
		con.Points[k] = PointAgg{Min: v, Max: v, Sum: v, Count: 1}
	})
	return con
}

// ownContribution is what the entity adds to its contains-parent: itself
// plus everything it contains.
func (c *Core) ownContribution(d *State) Contribution {
	con := c.selfContribution(d)
	for _, v := range d.contribs[edgeContains] {
		con.add(v)
	}
	return con
}

var severityNames = map[int]string{5: "critical", 4: "major", 3: "minor", 2: "warning", 1: "info"}

// rollupDoc is the twin's rollup: what lies beneath (children along
// contains, devices connected via a gateway), not the entity itself.
func rollupDoc(d *State) map[string]any {
	var sum Contribution
	for _, edge := range d.contribs {
		for _, v := range edge {
			sum.add(v)
		}
	}
	doc := map[string]any{"devices": float64(sum.Devices), "connected": float64(sum.Connected), "alerts": float64(sum.Alerts)}
	if sum.Alerts > 0 {
		doc["worstSeverity"] = severityNames[sum.Worst]
	}
	for k, p := range sum.Points {
		if k == "devices" || k == "connected" || k == "alerts" || k == "worstSeverity" {
			continue // a point named like a count must not overwrite it
		}
		doc[k] = map[string]any{"min": p.Min, "max": p.Max, "avg": p.Sum / float64(p.Count), "count": float64(p.Count)}
	}
	return doc
}

type edgeValue struct {
	edge  int
	to    string
	value Contribution
}

// edges lists the entity's contributions to its ancestors.
func (c *Core) edges(d *State) []edgeValue {
	var out []edgeValue
	if d.Ent.Parent != "" {
		out = append(out, edgeValue{edgeContains, d.Ent.Parent, c.ownContribution(d)})
	}
	if d.Ent.ConnectedVia != "" {
		out = append(out, edgeValue{edgeVia, d.Ent.ConnectedVia, c.selfContribution(d)})
	}
	return out
}

// storedContrib returns the contribution document on disk for key, read
// once per activation.
func (c *Core) storedContrib(d *State, key string) string {
	if v, ok := d.stored[key]; ok {
		return v
	}
	doc, err := c.r.Doc(BucketContrib, key)
	if err != nil {
		doc = nil
	}
	d.ownStored()
	d.stored[key] = string(doc)
	return string(doc)
}

// contribOps appends the writes that bring the stored contributions up to
// date; it reports whether any changed (the ancestors are then told after
// the debounce).
func (c *Core) contribOps(d *State, res *Result) bool {
	changed := false
	for _, e := range c.edges(d) {
		key := ContribKey(e.to, e.edge, d.ID)
		if v := e.value.encode(); c.storedContrib(d, key) != v {
			res.Ops = append(res.Ops, Op{Kind: OpPutDoc, Bucket: BucketContrib, Key: key, Doc: []byte(v)})
			d.ownStored()
			d.stored[key] = v
			changed = true
		}
	}
	return changed
}

// refreshUp recomputes the rollup and the contributions to the ancestors
// after something changed; nil when nothing changed.
func (c *Core) refreshUp(now time.Time, events []Event, force bool) *Result {
	d := c.draft()
	res := c.refreshUpFrom(now, d, events, force)
	if len(res.Ops) == 0 && len(res.Events) == 0 && len(res.Sends) == 0 {
		return nil
	}
	return res
}

// refreshUpFrom is refreshUp on a draft that may already hold changes:
// the twin document is written with whatever changed, and ancestors are
// told of contributions that differ from what they were last told.
func (c *Core) refreshUpFrom(now time.Time, d *State, events []Event, force bool) *Result {
	res := &Result{what: "rollup", Events: events}
	rolled := false
	if c.keepsRollup() {
		d.ownTwin()
		if ch := d.Twin.SetRollup(rollupDoc(d), now); !ch.Noop {
			res.Events = append(res.Events, c.changeEvent(d, EventRollup, ch, now))
			rolled = true
		}
	}
	for _, e := range c.edges(d) {
		key := ContribKey(e.to, e.edge, d.ID)
		v := e.value.encode()
		if force || c.storedContrib(d, key) != v {
			res.Ops = append(res.Ops, Op{Kind: OpPutDoc, Bucket: BucketContrib, Key: key, Doc: []byte(v)})
			d.ownStored()
			d.stored[key] = v
		}
		if d.sent[key] != v {
			res.Sends = append(res.Sends, Send{To: e.to, Contrib: &e.value, Edge: edgeNames[e.edge]})
			d.ownSent()
			d.sent[key] = v
		}
	}
	if len(res.Events) > 0 || len(res.Ops) > 0 {
		op, err := twinOp(d)
		if err == nil {
			res.Ops = append(res.Ops, op)
			d.unflushed, d.lastFlush = 0, now
		}
	}
	res.next = d
	if rolled {
		res.then = append(res.then, c.evaluateChange)
	}
	return res
}

// contribMoves appends the contribution records and notifications that a
// change of the entity's edges implies: retractions from old ancestors,
// contributions to new ones.
func (c *Core) contribMoves(d *State, old, cur record.Entity, res *Result) {
	d.ownContribCache()
	empty := Contribution{}.encode()
	for _, e := range []struct {
		edge     int
		from, to string
		value    Contribution
	}{
		{edgeContains, old.Parent, cur.Parent, c.ownContribution(d)},
		{edgeVia, old.ConnectedVia, cur.ConnectedVia, c.selfContribution(d)},
	} {
		if e.from != "" && e.from != e.to {
			key := ContribKey(e.from, e.edge, d.ID)
			res.Ops = append(res.Ops, Op{Kind: OpDeleteDoc, Bucket: BucketContrib, Key: key})
			res.Sends = append(res.Sends, Send{To: e.from, Contrib: &Contribution{}, Edge: edgeNames[e.edge], Removed: true})
			delete(d.sent, key)
			delete(d.stored, key)
		}
		if v := e.value.encode(); e.to != "" && (e.from != e.to || v != empty) {
			key := ContribKey(e.to, e.edge, d.ID)
			res.Ops = append(res.Ops, Op{Kind: OpPutDoc, Bucket: BucketContrib, Key: key, Doc: []byte(v)})
			val := e.value
			res.Sends = append(res.Sends, Send{To: e.to, Contrib: &val, Edge: edgeNames[e.edge]})
			d.sent[key], d.stored[key] = v, v
		}
	}
}

// contribution records a child's contribution (or its removal) and
// schedules the upward refresh.
func (c *Core) contribution(now time.Time, from string, p *actorspb.Contribution) *Result {
	edge, ok := edgeOf(p.Edge)
	if !ok || from == "" {
		return nil
	}
	val := contributionOf(p)
	res := &Result{what: "contribution"}
	res.commit = append(res.commit, func(st *State) {
		if p.Removed {
			delete(st.contribs[edge], from)
		} else {
			st.contribs[edge][from] = val
		}
	})
	c.scheduleRollup(now, res)
	return res
}

// rollupDelay bounds how often a grain passes a changed contribution up:
// telemetry can change a device's contribution hundreds of times a second,
// and every ancestor would otherwise process (and commit) each change.
const rollupDelay = 50 * time.Millisecond

// scheduleRollup throttles upward propagation: the first change after a
// quiet period goes up at once (low latency for sparse updates), later
// ones are gathered until rollupDelay after the last flush.
func (c *Core) scheduleRollup(now time.Time, res *Result) {
	if c.st.rollupPending {
		return
	}
	since := now.Sub(c.st.lastRollup)
	if since >= rollupDelay || since < 0 {
		res.then = append(res.then, func(_ context.Context, now time.Time) *Result { return c.flushRollup(now) })
		return
	}
	res.Timers.RollupAfter = rollupDelay - since
	res.commit = append(res.commit, func(st *State) { st.rollupPending = true })
}

func (c *Core) flushRollup(now time.Time) *Result {
	c.st.rollupPending = false
	c.st.lastRollup = now
	if !c.st.Exists {
		return nil
	}
	return c.refreshUp(now, nil, false)
}
