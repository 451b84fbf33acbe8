package cluster

import (
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	m := meta{Cluster: "twinmesh", ID: "Cg7jCgUSHCbMgSv2kPtV3F", Host: "10.0.0.12", Port: 41234,
		Kinds: []string{"building", "device", "floor", "gateway", "prototopic", "room", "site", "thermostat"}}
	n, ok := m.fits()
	if !ok {
		t.Fatalf("typical metadata does not fit: %d bytes", n)
	}
	got, err := decodeMeta(m.encode())
	if err != nil || got.ID != m.ID || got.Cluster != m.Cluster || got.remote() != "10.0.0.12:41234" || len(got.Kinds) != 8 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	pm := got.member()
	if pm.Address() != "10.0.0.12:41234" || pm.Id != m.ID || len(pm.Kinds) != 8 {
		t.Fatalf("protoactor member %+v", pm)
	}
	for _, bad := range []string{"", "garbage", `{"id":""}`, `{"id":"x","host":"h","port":0}`, `{"id":"x","port":1}`, strings.Repeat(" ", 600)} {
		if _, err := decodeMeta([]byte(bad)); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

func TestMetaIPv6Member(t *testing.T) {
	m := meta{ID: "x", Host: "::1", Port: 8090, Kinds: []string{"device"}}
	if got := m.member().Address(); got != "[::1]:8090" {
		t.Fatalf("protoactor address %q", got)
	}
	if got := m.remote(); got != "[::1]:8090" {
		t.Fatalf("remote %q", got)
	}
}

func TestMetaTooLarge(t *testing.T) {
	var kinds []string
	for i := 0; i < 60; i++ {
		kinds = append(kinds, "kind-with-a-long-name")
	}
	m := meta{Cluster: "twinmesh", ID: "Cg7jCgUSHCbMgSv2kPtV3F", Host: "10.0.0.12", Port: 41234, Kinds: kinds}
	if n, ok := m.fits(); ok || n <= memberlist.MetaMaxSize {
		t.Fatalf("fits() = %d, %v", n, ok)
	}
}

func TestLeaveNotice(t *testing.T) {
	n, err := decodeLeaveNotice(leaveNotice{Leaving: "b", ID: "b-1"}.encode())
	if err != nil || n.Leaving != "b" || n.ID != "b-1" {
		t.Fatalf("round trip: %+v, %v", n, err)
	}
	for _, bad := range []string{"", "{}", `{"leaving":"b"}`, `{"id":"x"}`, "[1]"} {
		if _, err := decodeLeaveNotice([]byte(bad)); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"cluster":"c","id":"a","host":"127.0.0.1","port":1,"kinds":["x"]}`))
	f.Add([]byte(`{"id":"a","host":"::1","port":65535}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if m.ID == "" || m.Port <= 0 || m.Port > 65535 {
			t.Fatalf("accepted invalid %+v", m)
		}
		b = m.encode()
		if len(b) > memberlist.MetaMaxSize {
			return // escaping can grow it; fits() guards our own metadata
		}
		again, err := decodeMeta(b)
		if err != nil || again.ID != m.ID || again.remote() != m.remote() {
			t.Fatalf("re-encoding %+v: %+v, %v", m, again, err)
		}
	})
}
