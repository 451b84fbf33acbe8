package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewProviderValidates(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{"zero value", Config{}, ""},
		{"local profile", Config{NodeName: "n1", GossipAddr: "127.0.0.1:0", Profile: ProfileLocal}, ""},
		{"every interface", Config{NodeName: "n1", GossipAddr: ":0"}, ""},
		{"ipv6", Config{NodeName: "n1", GossipAddr: "[::1]:7946"}, ""},
		{"aes-128 key", Config{GossipKey: make([]byte, 16)}, ""},
		{"aes-192 key", Config{GossipKey: make([]byte, 24)}, ""},
		{"aes-256 key", Config{GossipKey: make([]byte, 32)}, ""},
		{"seeds", Config{Join: []string{"10.0.0.1:7946", "seed.example:7946", "10.0.0.2"}}, ""},
		{"no port", Config{GossipAddr: "127.0.0.1"}, "gossip address"},
		{"port out of range", Config{GossipAddr: "127.0.0.1:99999"}, "bad port"},
		{"port not a number", Config{GossipAddr: "127.0.0.1:gossip"}, "bad port"},
		{"host name", Config{GossipAddr: "localhost:7946"}, "must be an IP"},
		{"short key", Config{GossipKey: []byte("short")}, "16, 24 or 32"},
		{"long key", Config{GossipKey: make([]byte, 33)}, "16, 24 or 32"},
		{"unknown profile", Config{Profile: "wan"}, "profile"},
		{"empty seed", Config{Join: []string{"10.0.0.1:7946", " "}}, "empty join"},
		{"bad seed port", Config{Join: []string{"10.0.0.1:70000"}}, "join address"},
		{"negative leave timeout", Config{LeaveTimeout: -time.Second}, "leave timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProvider(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v does not wrap ErrConfig", err)
			}
			if p != nil {
				t.Fatal("provider returned with an error")
			}
		})
	}
}

func TestNewProviderFillsDefaults(t *testing.T) {
	p, err := NewProvider(Config{})
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if p.cfg.NodeName != def.NodeName || p.cfg.NodeName == "" || p.cfg.GossipAddr != DefaultGossipAddr ||
		p.cfg.Profile != ProfileLAN || p.cfg.Logger == nil || p.cfg.LeaveTimeout != 5*time.Second {
		t.Fatalf("defaults not filled: %+v", p.cfg)
	}
	if got := p.GossipAddr(); got != DefaultGossipAddr {
		t.Fatalf("GossipAddr before start = %q", got)
	}
	if ms := p.Members(); len(ms) != 0 {
		t.Fatalf("members before start: %+v", ms)
	}
	if err := p.Shutdown(true); err != nil {
		t.Fatalf("Shutdown before start: %v", err)
	}
}

func TestProfiles(t *testing.T) {
	for _, tc := range []struct {
		profile         string
		probeTimeout    time.Duration
		suspicionFactor int
	}{{ProfileLAN, 500 * time.Millisecond, 4}, {ProfileLocal, 200 * time.Millisecond, 3}} {
		p, err := NewProvider(Config{Profile: tc.profile, GossipAddr: "10.1.2.3:7000", GossipKey: make([]byte, 16)})
		if err != nil {
			t.Fatal(err)
		}
		mc := p.cfg.memberlistConfig()
		if mc.ProbeTimeout != tc.probeTimeout || mc.SuspicionMult != tc.suspicionFactor {
			t.Errorf("%s: probe timeout %v, suspicion mult %d", tc.profile, mc.ProbeTimeout, mc.SuspicionMult)
		}
		if mc.BindAddr != "10.1.2.3" || mc.BindPort != 7000 || mc.AdvertiseAddr != "10.1.2.3" || mc.AdvertisePort != 7000 || len(mc.SecretKey) != 16 {
			t.Errorf("%s: addresses or key not applied: %+v", tc.profile, mc)
		}
	}
	p, _ := NewProvider(Config{GossipAddr: ":7946"})
	if mc := p.cfg.memberlistConfig(); mc.BindAddr != "0.0.0.0" || mc.AdvertiseAddr != "" {
		t.Errorf("unspecified bind: bind %q advertise %q", mc.BindAddr, mc.AdvertiseAddr)
	}
}
