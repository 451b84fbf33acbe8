package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
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

// TestVerifyPolicyUnencodedResource: the Node.js service SDK signs a host
// name with a port as it is, not URL-encoded.
func TestVerifyPolicyUnencodedResource(t *testing.T) {
	const key = "AAECAwQFBgcICQoLDA0ODw=="
	now := time.Unix(1_800_000_000, 0)
	se := now.Add(time.Hour).Unix()
	k, _ := base64.StdEncoding.DecodeString(key)
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte("localhost:8443\n" + strconv.FormatInt(se, 10)))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	tok, err := Parse("SharedAccessSignature sr=localhost:8443&sig=" + sig + "&skn=registryRead&se=" + strconv.FormatInt(se, 10))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPolicy(tok, []string{key}, now); err != nil {
		t.Fatalf("VerifyPolicy: %v", err)
	}
	if err := VerifyPolicy(tok, []string{"DwAODQwLCgkIBwYFBAMCAQ=="}, now); !errors.Is(err, ErrSignature) {
		t.Fatalf("another key: %v", err)
	}
}
