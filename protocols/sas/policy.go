package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
)

// VerifyPolicy checks a hub-level token (one that names a shared access
// policy with skn): that it has not expired at now and that one of keys
// (base64) signed it. The resource is not checked, as for devices: a back
// end keeps the host name it was given.
//
// The string signed is the resource URL-encoded, as IoT Hub documents it,
// or the resource as it is: the Azure IoT service SDK for Node.js signs the
// host name of its connection string without encoding it, which differs
// only when the host name carries a port ("localhost:8443").
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
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(t.Resource + "\n" + strconv.FormatInt(t.Expiry.Unix(), 10)))
		if hmac.Equal(given, mac.Sum(nil)) {
			return nil
		}
	}
	return ErrSignature
}
