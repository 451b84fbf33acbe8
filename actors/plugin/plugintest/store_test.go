package plugintest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/persistence/record"
)

func TestStore(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewStore()
	s.Apply([]entity.Op{
		{Kind: entity.OpPutEntity, Key: "r1", Entity: record.Entity{ID: "r1", Kind: "room"}},
		{Kind: entity.OpPutEntity, Key: "d1", Entity: record.Entity{ID: "d1", Kind: "device", Parent: "r1"}},
		{Kind: entity.OpPutTwin, Key: "d1", Doc: []byte(`{}`)},
		{Kind: entity.OpPutDoc, Bucket: entity.BucketContrib, Key: "d1/c/x", Doc: []byte(`1`)},
		{Kind: entity.OpPutDoc, Bucket: entity.BucketContrib, Key: "r1/c/d1", Doc: []byte(`2`)},
		{Kind: entity.OpAppendTelemetry, Key: "d1", Telemetry: record.TelemetryRecord{TS: t0}},
		{Kind: entity.OpAppendTelemetry, Key: "d1", Telemetry: record.TelemetryRecord{TS: t0.Add(time.Second)}},
		{Kind: entity.OpAppendTelemetry, Key: "d1", Telemetry: record.TelemetryRecord{TS: t0.Add(2 * time.Second)}},
		{Kind: entity.OpPutInbox, Key: "d1", Inbox: record.InboxMessage{ID: "m1"}},
		{Kind: entity.OpPutInbox, Key: "d1", Inbox: record.InboxMessage{ID: "m2"}},
		{Kind: entity.OpDeleteInbox, Key: "d1", Msg: "m1"},
	})
	cases := []struct {
		name string
		from time.Time
		lim  int
		want []time.Time
	}{
		{"all, newest first", time.Time{}, 10, []time.Time{t0.Add(2 * time.Second), t0.Add(time.Second), t0}},
		{"from is inclusive", t0.Add(time.Second), 10, []time.Time{t0.Add(2 * time.Second), t0.Add(time.Second)}},
		{"limit keeps the newest", time.Time{}, 1, []time.Time{t0.Add(2 * time.Second)}},
		{"none after the newest", t0.Add(3 * time.Second), 10, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := s.Telemetry(context.Background(), "d1", tc.from, tc.lim)
			if err != nil || len(recs) != len(tc.want) {
				t.Fatalf("%d records, %v", len(recs), err)
			}
			for i, r := range recs {
				if !r.TS.Equal(tc.want[i]) {
					t.Fatalf("record %d at %v, want %v", i, r.TS, tc.want[i])
				}
			}
		})
	}
	if has, _ := s.HasChildren("r1"); !has {
		t.Fatal("r1 has a child")
	}
	if in, _ := s.Inbox("d1"); len(in) != 1 || in[0].ID != "m2" {
		t.Fatalf("inbox %+v", in)
	}
	if docs, _ := s.Docs(entity.BucketContrib, "r1/"); len(docs) != 1 {
		t.Fatalf("contributions to r1: %v", docs)
	}
	s.Apply([]entity.Op{{Kind: entity.OpDeleteEntity, Key: "d1"}})
	for what, err := range map[string]error{"entity": errOf(s.Entity("d1")), "twin": errOf(s.TwinDoc("d1")),
		"contribution": errOf(s.Doc(entity.BucketContrib, "d1/c/x"))} {
		if !errors.Is(err, entity.ErrNotFound) {
			t.Errorf("%s of a deleted entity: %v", what, err)
		}
	}
	if recs, _ := s.Telemetry(context.Background(), "d1", time.Time{}, 10); len(recs) != 0 {
		t.Fatal("telemetry of a deleted entity")
	}
}

func errOf[T any](_ T, err error) error { return err }
