package entity

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// FuzzStep feeds the core what clients and devices control — desired, tags
// and reported merge patches, If-Match versions, telemetry points and
// message IDs, entity tags — and checks that it never panics, that a
// refused message changes nothing, that an accepted one moves the version
// by at most one per section it patches, and that the committed twin
// always encodes.
func FuzzStep(f *testing.F) {
	f.Add([]byte(`{"a":1}`), []byte(`{"t":"x"}`), []byte(`{"fw":"2"}`), int64(-1), 21.5, "m1", []byte(`{"site":"b"}`))
	f.Add([]byte(`{"a":null,"$x":1}`), []byte(`[]`), []byte(`{`), int64(1), math.Copysign(0, -1), "", []byte(`null`))
	f.Add([]byte(`{"a":{"b":{"c":{"d":[1,2,{"e":"f"}]}}}}`), []byte(`{}`), []byte(`{"a":"\u0000"}`), int64(0), 1e308, "m1", []byte(`{"k":[1]}`))
	f.Fuzz(func(t *testing.T, desired, tags, reported []byte, ifVersion int64, temp float64, mid string, entTags []byte) {
		m := newMem()
		m.ents["r1"] = record.Entity{ID: "r1", Kind: "room"}
		c := newCore(t, m, "d1", "device", Device)
		create := put("device", "r1")
		create.GetPutEntity().Tags = entTags
		msgs := []*actorspb.Request{
			create,
			telemetry(mid, map[string]any{"temperature": temp}),
			{Body: &actorspb.Request_Patch{Patch: &actorspb.PatchTwin{Desired: desired, Tags: tags}}},
			{Body: &actorspb.Request_Reported{Reported: &actorspb.PatchReported{Patch: reported}}},
			telemetry(mid, map[string]any{"temperature": temp, "ok": true, "s": string(reported)}),
		}
		if ifVersion >= 0 {
			v := ifVersion
			msgs = append(msgs, &actorspb.Request{Body: &actorspb.Request_Patch{Patch: &actorspb.PatchTwin{Desired: desired, IfVersion: &v}}})
		}
		for i, msg := range msgs {
			var before []byte
			var v0 int64
			if c.Exists() {
				before, _ = c.Twin().MarshalJSON()
				v0 = c.Twin().Version()
			}
			reply, _, err := run(t, m, c, t0.Add(time.Duration(i)*time.Second), msg)
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if !c.Exists() {
				if i == 0 && reply.Code == 0 {
					t.Fatal("created, yet no entity")
				}
				return
			}
			after, err := c.Twin().MarshalJSON()
			if err != nil || !json.Valid(after) {
				t.Fatalf("message %d: twin does not encode: %v %s", i, err, after)
			}
			if reply.Code != 0 {
				if errcode.Code(reply.Code) == errcode.Internal {
					t.Fatalf("message %d: internal error %s", i, reply.Message)
				}
				if before != nil && string(before) != string(after) {
					t.Fatalf("message %d refused (%s) but the twin changed", i, reply.Message)
				}
				continue
			}
			most := int64(1)
			if p := msg.GetPatch(); p != nil && len(p.Desired) > 0 && len(p.Tags) > 0 {
				most = 2 // desired and tags: each section's change counts
			}
			if d := c.Twin().Version() - v0; before != nil && (d < 0 || d > most) {
				t.Fatalf("message %d moved the version by %d", i, d)
			}
		}
	})
}
