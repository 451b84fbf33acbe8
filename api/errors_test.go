package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api"
)

func TestErrorOf(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
		msg    string
	}{
		{"coded", errcode.New(errcode.NotFound, "entity b1"), 404, "not_found", "entity b1"},
		{"sentinel wrapped as the actors do", fmt.Errorf("%w: twin d1 is at version 3, not 2", errcode.ErrPrecondition),
			412, "precondition_failed", "version mismatch: twin d1 is at version 3, not 2"},
		{"wrapped with context", fmt.Errorf("patch: %w", errcode.New(errcode.TooLarge, "desired is 2000 bytes")),
			413, "too_large", "patch: desired is 2000 bytes"},
		{"fenced shows as unavailable", errcode.New(errcode.Fenced, "entity d1 is moving"), 503, "unavailable", "entity d1 is moving"},
		{"not connected", errcode.ErrNotConnected, 404, "not_connected", "device not connected"},
		{"plain error is internal", errors.New("disk on fire"), 500, "internal", "disk on fire"},
		{"deadline is a timeout", fmt.Errorf("invoke: %w", context.DeadlineExceeded), 504, "timeout", "invoke: context deadline exceeded"},
		{"cancelled is unavailable", context.Canceled, 503, "unavailable", "context canceled"},
		{"a code beats the context", errcode.Wrap(errcode.NotConnected, context.Canceled), 404, "not_connected", "context canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := api.ErrorOf(tc.err)
			if status != tc.status || body.Code != tc.code || body.Message != tc.msg {
				t.Fatalf("ErrorOf = %d %+v, want %d {%s %s}", status, body, tc.status, tc.code, tc.msg)
			}
		})
	}
}

// repeatedLead returns the leading phrase that msg repeats ("version
// mismatch: version mismatch: …", "not found: not found …"), or "".
func repeatedLead(msg string) string {
	parts := strings.Split(strings.ToLower(msg), ": ")
	for i := 0; i < len(parts)-1; i++ {
		rest := strings.Join(parts[i+1:], ": ")
		if lead := strings.TrimSpace(parts[i]); lead != "" && strings.HasPrefix(rest, lead) {
			return lead
		}
	}
	return ""
}

func TestRepeatedLead(t *testing.T) {
	for msg, want := range map[string]string{
		"version mismatch: version mismatch: twin d1":  "version mismatch",
		"not found: not found entity x":                "not found",
		"patch: too large: too large":                  "too large",
		"version mismatch: twin d1 is at version 3":    "",
		"not found: entity x":                          "",
		"malformed JSON: unexpected end of JSON input": "",
	} {
		if got := repeatedLead(msg); got != want {
			t.Errorf("repeatedLead(%q) = %q, want %q", msg, got, want)
		}
	}
}

// TestErrorMessagesSayItOnce fires errors of each kind through REST and
// checks the body: the status is the code's, and the message says its
// leading phrase once (no "version mismatch: version mismatch: …").
func TestErrorMessagesSayItOnce(t *testing.T) {
	c := newServer(t)
	c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/devices/d1", `{"parent":"b1"}`, 201)
	big := fmt.Sprintf(`{"desired":{"blob":%q}}`, strings.Repeat("x", 2000))
	tests := []struct {
		name, method, path string
		body               any
		headers            []string
		status             int
		code               string
	}{
		{"412 if-match", "PATCH", "/api/v1/twins/d1", `{"desired":{"fan":"on"}}`, []string{"If-Match", `"999"`}, 412, "precondition_failed"},
		{"404 twin", "GET", "/api/v1/twins/ghost", nil, nil, 404, "not_found"},
		{"404 entity", "GET", "/api/v1/entities/ghost", nil, nil, 404, "not_found"},
		{"404 device", "GET", "/api/v1/devices/ghost", nil, nil, 404, "not_found"},
		{"404 patch unknown twin", "PATCH", "/api/v1/twins/ghost", `{"desired":{"x":1}}`, nil, 404, "not_found"},
		{"404 message", "GET", "/api/v1/devices/d1/messages/m-none", nil, nil, 404, "not_found"},
		{"404 rule", "GET", "/api/v1/rules/none", nil, nil, 404, "not_found"},
		{"404 endpoint", "GET", "/api/v1/nothing-here", nil, nil, 404, "not_found"},
		{"404 not connected", "POST", "/api/v1/devices/d1/methods/reboot", `{}`, nil, 404, "not_connected"},
		{"400 unknown kind", "PUT", "/api/v1/entities/x1", `{"kind":"spaceship"}`, nil, 400, "bad_request"},
		{"400 malformed", "PATCH", "/api/v1/twins/d1", `{"desired":`, nil, 400, "bad_request"},
		{"400 reserved key", "PATCH", "/api/v1/twins/d1", `{"desired":{"$version":9}}`, nil, 400, "bad_request"},
		{"400 status", "PATCH", "/api/v1/devices/d1", `{"status":"sleepy"}`, nil, 400, "bad_request"},
		{"400 limit", "GET", "/api/v1/twins?limit=-1", nil, nil, 400, "bad_request"},
		{"400 if-match", "PATCH", "/api/v1/twins/d1", `{"desired":{}}`, []string{"If-Match", "seven"}, 400, "bad_request"},
		{"413 section", "PATCH", "/api/v1/twins/d1", big, nil, 413, "too_large"},
		{"413 depth", "PATCH", "/api/v1/twins/d1", `{"desired":{"a":{"b":{"c":{"d":{"e":1}}}}}}`, nil, 413, "too_large"},
		{"413 body", "PATCH", "/api/v1/twins/d1", fmt.Sprintf(`{"desired":{"blob":%q}}`, strings.Repeat("x", 70<<10)), nil, 413, "too_large"},
		{"409 kind change", "PUT", "/api/v1/entities/b1", `{"kind":"room"}`, nil, 409, "conflict"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, hdr, body, err := c.Do(context.Background(), tc.method, tc.path, tc.body, tc.headers...)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				Error api.ErrorBody `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body %s: %v", body, err)
			}
			if st != tc.status || e.Error.Code != tc.code {
				t.Fatalf("%d %s, want %d %s: %s", st, e.Error.Code, tc.status, tc.code, body)
			}
			if hdr.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", hdr.Get("Content-Type"))
			}
			msg := e.Error.Message
			if msg == "" {
				t.Fatal("empty message")
			}
			if lead := repeatedLead(msg); lead != "" {
				t.Fatalf("message repeats %q: %q", lead, msg)
			}
			t.Logf("%d %s: %s", st, e.Error.Code, msg)
		})
	}
}
