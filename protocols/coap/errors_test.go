package coap

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

func TestCodeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{errcode.New(errcode.BadRequest, "x"), codes.BadRequest},
		{errcode.New(errcode.Unauthorized, "x"), codes.Unauthorized},
		{errcode.New(errcode.Forbidden, "x"), codes.Forbidden},
		{errcode.New(errcode.NotFound, "x"), codes.NotFound},
		{errcode.New(errcode.TooLarge, "x"), codes.RequestEntityTooLarge},
		{errcode.New(errcode.Throttled, "x"), codes.TooManyRequests},
		{errcode.New(errcode.Unavailable, "x"), codes.ServiceUnavailable},
		{errcode.New(errcode.Fenced, "x"), codes.ServiceUnavailable},
		{errcode.New(errcode.Precondition, "x"), codes.PreconditionFailed},
		{errors.New("no code"), codes.InternalServerError},
	} {
		if got := codeOf(tc.err); got != tc.want {
			t.Errorf("codeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestDiagnosticCut(t *testing.T) {
	err := errors.New(strings.Repeat("é", 300))
	for _, limit := range []int{-1, 0, 1, 2, 3, 50, 1000} {
		d := diagnostic(err, limit)
		if len(d) > max(limit, 0) || len(d) > maxDiagnostic || !utf8.Valid(d) {
			t.Fatalf("limit %d: %d bytes, valid UTF-8 %v", limit, len(d), utf8.Valid(d))
		}
	}
}

func TestLoopbackRequired(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		insecure bool
		ok       bool
	}{
		{"127.0.0.1:5683", false, true},
		{"[::1]:5683", false, true},
		{"localhost:5683", false, true},
		{"0.0.0.0:5683", false, false},
		{":5683", false, false},
		{"192.0.2.1:5683", false, false},
		{"0.0.0.0:5683", true, true},
	} {
		cfg := Config{Addr: tc.addr, Insecure: tc.insecure}
		err := cfg.defaults()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInsecure)) {
			t.Errorf("%s insecure=%v: %v", tc.addr, tc.insecure, err)
		}
	}
	if err := (&Config{}).defaults(); err == nil {
		t.Error("no listener accepted")
	}
}

func TestKeyChooser(t *testing.T) {
	k, err := newKeyChooser(16)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.choose("d", "ip1"); got != 0 {
		t.Fatalf("first offer %d, want the primary", got)
	}
	k.result("d", "ip1", 0, false) // the device holds the secondary
	if got := k.choose("d", "ip1"); got != 1 {
		t.Fatalf("after a failure: %d, want the secondary", got)
	}
	if got := k.choose("d", "ip2"); got != 0 {
		t.Fatalf("another address: %d, want the primary still", got)
	}
	k.result("d", "ip1", 1, true)
	for _, ip := range []string{"ip1", "ip2"} {
		if got := k.choose("d", ip); got != 1 {
			t.Fatalf("%s after a success with the secondary: %d", ip, got)
		}
	}
	k.result("d", "ip3", 1, false) // an attacker failing from elsewhere
	if got := k.choose("d", "ip1"); got != 1 {
		t.Fatalf("a failure elsewhere changed the device's offer: %d", got)
	}
}

func TestEnvelope(t *testing.T) {
	for _, tc := range []struct {
		payload, want string
	}{
		{`{"a":1}`, `{"messageId":"m","payload":{"a":1}}`},
		{`hello`, `{"messageId":"m","payload":"hello"}`},
		{"", `{"messageId":"m","payload":""}`},
		{"\xff\x00", `{"messageId":"m","payloadBase64":"/wA="}`},
	} {
		if got := string(envelope(Message{ID: "m", Payload: []byte(tc.payload)})); got != tc.want {
			t.Errorf("envelope(%q) = %s, want %s", tc.payload, got, tc.want)
		}
	}
}
