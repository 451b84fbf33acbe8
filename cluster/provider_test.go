package cluster

import (
	"strings"
	"testing"
)

func TestNewProviderValidates(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{NodeName: "n1", GossipAddr: "127.0.0.1:0"}, ""},
		{"default addr", Config{NodeName: "n1"}, ""},
		{"no name", Config{GossipAddr: "127.0.0.1:0"}, "NodeName"},
		{"no port", Config{NodeName: "n1", GossipAddr: "127.0.0.1"}, "gossip address"},
		{"bad port", Config{NodeName: "n1", GossipAddr: "127.0.0.1:99999"}, "bad port"},
		{"key length", Config{NodeName: "n1", GossipKey: []byte("short")}, "16, 24 or 32"},
		{"profile", Config{NodeName: "n1", Profile: "wan-ish"}, "profile"},
		{"aes-256 key", Config{NodeName: "n1", GossipKey: make([]byte, 32), Profile: "local"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewProvider(tc.cfg)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMetaRoundTripFitsMemberlist(t *testing.T) {
	p, _ := NewProvider(Config{NodeName: "n1"})
	p.self = meta{ID: "Cg7jCgUSHCbMgSv2kPtV3F", Host: "10.0.0.12", Port: 41234,
		Kinds: []string{"building", "device", "floor", "gateway", "room", "site", "thermostat"}}
	b := delegate{p}.NodeMeta(512)
	m, ok := decodeMeta(b)
	if !ok || m.ID != p.self.ID || len(m.Kinds) != 7 || len(b) > 512 {
		t.Fatalf("meta %s → %+v", b, m)
	}
	if _, ok := decodeMeta([]byte("garbage")); ok {
		t.Fatal("garbage decoded")
	}
}
