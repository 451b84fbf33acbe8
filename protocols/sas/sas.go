// Package sas mints and verifies Azure IoT Hub device shared access
// signatures, so devices written for IoT Hub authenticate unchanged:
//
//	SharedAccessSignature sr=<url-encoded resource>&sig=<signature>&se=<unix expiry>[&skn=<key name>]
//
// where resource is "<host>/devices/<deviceId>" and signature is
// base64(HMAC-SHA256(base64decode(key), urlencode(resource) + "\n" + expiry)).
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors; Verify and Parse wrap them with detail.
var (
	// ErrMalformed: the token is not a SharedAccessSignature of the expected form.
	ErrMalformed = errors.New("malformed SAS token")
	// ErrExpired: the token's expiry has passed.
	ErrExpired = errors.New("SAS token expired")
	// ErrSignature: the signature matches none of the device's keys.
	ErrSignature = errors.New("SAS signature mismatch")
	// ErrWrongDevice: the token's resource names another device.
	ErrWrongDevice = errors.New("SAS token is for another device")
	// ErrLifetime: the token's expiry is further ahead than the maximum
	// lifetime allowed (VerifyLifetime): a stolen long-lived token would
	// stay good for that long.
	ErrLifetime = errors.New("SAS token lifetime over the maximum")
)

const prefix = "SharedAccessSignature "

// Token is a parsed SAS token.
type Token struct {
	Resource  string // decoded sr, e.g. "hub.example/devices/dev-1"
	Signature string // base64 signature, decoded from the URL form
	Expiry    time.Time
	KeyName   string // skn, empty for device keys
}

func sign(resource string, key []byte, expiry int64) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(url.QueryEscape(resource) + "\n" + strconv.FormatInt(expiry, 10)))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Sign returns a token for resource signed with key (base64), valid until expiry.
func Sign(resource, key string, expiry time.Time) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("sas: key is not base64: %w", err)
	}
	se := expiry.Unix()
	return prefix + "sr=" + url.QueryEscape(resource) + "&sig=" + url.QueryEscape(sign(resource, k, se)) +
		"&se=" + strconv.FormatInt(se, 10), nil
}

// Parse decodes a token without checking its signature or expiry.
func Parse(token string) (Token, error) {
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: does not start with %q", ErrMalformed, strings.TrimSpace(prefix))
	}
	var t Token
	var haveSR, haveSig, haveSE bool
	for _, part := range strings.Split(rest, "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return Token{}, fmt.Errorf("%w: field %q has no value", ErrMalformed, part)
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return Token{}, fmt.Errorf("%w: field %s: %v", ErrMalformed, k, err)
		}
		switch k {
		case "sr":
			t.Resource, haveSR = dv, true
		case "sig":
			t.Signature, haveSig = dv, true
		case "se":
			se, err := strconv.ParseInt(dv, 10, 64)
			if err != nil || se < 0 {
				return Token{}, fmt.Errorf("%w: se %q is not a unix time", ErrMalformed, dv)
			}
			t.Expiry, haveSE = time.Unix(se, 0), true
		case "skn":
			t.KeyName = dv
		default:
			return Token{}, fmt.Errorf("%w: unknown field %q", ErrMalformed, k)
		}
	}
	if !haveSR || !haveSig || !haveSE || t.Resource == "" || t.Signature == "" {
		return Token{}, fmt.Errorf("%w: sr, sig and se are required", ErrMalformed)
	}
	return t, nil
}

// DeviceOf returns the device ID a resource names ("<host>/devices/<id>"),
// or false.
func DeviceOf(resource string) (string, bool) {
	_, after, ok := strings.Cut(resource, "/devices/")
	if !ok || after == "" || strings.Contains(after, "/") {
		return "", false
	}
	return after, true
}

// Verify checks that token is a valid, unexpired signature for deviceID by
// one of keys (base64). The host part of the resource is not checked: a
// device keeps the token it was given for its hub.
func Verify(token, deviceID string, keys []string, now time.Time) error {
	return VerifyLifetime(token, deviceID, keys, now, 0)
}

// VerifyLifetime is Verify that also refuses (ErrLifetime) a token whose
// expiry is more than maxLifetime after now; 0 allows any.
func VerifyLifetime(token, deviceID string, keys []string, now time.Time, maxLifetime time.Duration) error {
	t, err := Parse(token)
	if err != nil {
		return err
	}
	dev, ok := DeviceOf(t.Resource)
	if !ok {
		return fmt.Errorf("%w: resource %q does not name a device", ErrMalformed, t.Resource)
	}
	if dev != deviceID {
		return fmt.Errorf("%w: token names %q, client is %q", ErrWrongDevice, dev, deviceID)
	}
	if !now.Before(t.Expiry) {
		return fmt.Errorf("%w at %s", ErrExpired, t.Expiry.UTC().Format(time.RFC3339))
	}
	if maxLifetime > 0 && t.Expiry.Sub(now) > maxLifetime {
		return fmt.Errorf("%w: expires at %s, at most %v ahead is allowed", ErrLifetime, t.Expiry.UTC().Format(time.RFC3339), maxLifetime)
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
