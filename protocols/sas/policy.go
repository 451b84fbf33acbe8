package sas

import (
	"crypto/hmac"
	"encoding/base64"
	"fmt"
	"time"
)

// VerifyPolicy checks a hub-level token (one that names a shared access
// policy with skn): that it has not expired at now and that one of keys
// (base64) signed it. The resource is not checked, as for devices: a back
// end keeps the host name it was given.
func VerifyPolicy(t Token, keys []string, now time.Time) error {
	if !now.Before(t.Expiry) {
		return fmt.Errorf("%w at %s", ErrExpired, t.Expiry.UTC().Format(time.RFC3339))
	}
	given, err := base64.StdEncoding.DecodeString(t.Signature)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	for _, key := range keys {
		k, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(k) == 0 {
			continue
		}
		want, _ := base64.StdEncoding.DecodeString(sign(t.Resource, k, t.Expiry.Unix()))
		if hmac.Equal(given, want) {
			return nil
		}
	}
	return ErrSignature
}
