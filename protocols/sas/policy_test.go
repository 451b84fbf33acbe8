package sas

import (
	"errors"
	"testing"
	"time"
)

func TestVerifyPolicy(t *testing.T) {
	const key, other = "AAECAwQFBgcICQoLDA0ODw==", "DwAODQwLCgkIBwYFBAMCAQ=="
	now := time.Unix(1_800_000_000, 0)
	tok, err := Sign("hub.example", key, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tok += "&skn=registryRead"
	for _, tc := range []struct {
		name string
		keys []string
		at   time.Time
		want error
	}{
		{"primary key", []string{key}, now, nil},
		{"secondary key", []string{other, key}, now, nil},
		{"another key", []string{other}, now, ErrSignature},
		{"no key", nil, now, ErrSignature},
		{"expired", []string{key}, now.Add(time.Hour), ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parsed, err := Parse(tok)
			if err != nil || parsed.KeyName != "registryRead" {
				t.Fatalf("parse: %+v %v", parsed, err)
			}
			if err := VerifyPolicy(parsed, tc.keys, tc.at); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("VerifyPolicy: %v, want %v", err, tc.want)
			}
		})
	}
}
