package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestQueryParameters: a parameter the route does not read is refused
// with 400 naming it and what the route takes (issue 18: ?knd= used to
// answer everything).
func TestQueryParameters(t *testing.T) {
	c := newServer(t)
	c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/devices/d1", `{"parent":"b1"}`, 201)
	for _, tc := range []struct {
		method, path string
		status       int
		say          string
	}{
		{"GET", "/api/v1/entities?knd=device", 400, `unknown query parameter "knd": this route takes kind, under, tag.<name>, limit, cursor`},
		{"GET", "/api/v1/twins?kind=device&tag.site=b1&limit=5", 200, ""},
		{"GET", "/api/v1/twins?tag.=x", 400, `"tag."`},
		{"GET", "/api/v1/twins/d1?version=3", 400, "takes none"},
		{"GET", "/api/v1/twins/d1/telemetry?name=t&from=2026-01-01T00:00:00Z&limit=10", 200, ""},
		{"GET", "/api/v1/twins/d1/telemetry?since=2026-01-01T00:00:00Z", 400, `"since"`},
		{"GET", "/api/v1/alerts?state=active&under=b1", 200, ""},
		{"GET", "/api/v1/alerts?severity=major", 400, `"severity"`},
		{"POST", "/api/v1/devices/d1/token?ttl=60", 200, ""},
		{"POST", "/api/v1/devices/d1/token?tll=60", 400, `"tll"`},
		{"DELETE", "/api/v1/entities/b1?recursiv=true", 400, `"recursiv"`},
		{"GET", "/api/v1/twins/d1?access_token=" + token, 200, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			st, _, body, err := c.Do(context.Background(), tc.method, tc.path, nil)
			var e apiErr
			_ = json.Unmarshal(body, &e)
			if err != nil || st != tc.status || !strings.Contains(e.Error.Message, tc.say) {
				t.Fatalf("%d %s (%v), want %d saying %q", st, body, err, tc.status, tc.say)
			}
		})
	}
}

// TestJSONIsNotHTMLEscaped: SAS tokens read "&sig=", rule conditions "<",
// in REST answers and in error messages.
func TestJSONIsNotHTMLEscaped(t *testing.T) {
	c := newServer(t)
	c.MustDo(t, "PUT", "/api/v1/devices/d1", nil, 201)
	tok := c.MustDo(t, "POST", "/api/v1/devices/d1/token", nil, 200)
	if !strings.Contains(string(tok), "&sig=") || strings.Contains(string(tok), `\u0026`) {
		t.Fatalf("token answer %s", tok)
	}
	rule := c.MustDo(t, "PUT", "/api/v1/rules/cold", `{"when":"telemetry.t < 3 && telemetry.t > -40","then":[{"alert":{"severity":"minor"}}]}`, 201)
	list := c.MustDo(t, "GET", "/api/v1/rules", nil, 200)
	for _, b := range [][]byte{rule, list} {
		if !strings.Contains(string(b), "telemetry.t < 3 && telemetry.t > -40") {
			t.Fatalf("rule answer %s", b)
		}
	}
	c.MustDo(t, "PATCH", "/api/v1/twins/d1", `{"desired":{"note":"<b>&</b>"}}`, 200)
	if tw := c.MustDo(t, "GET", "/api/v1/twins/d1", nil, 200); !strings.Contains(string(tw), `"note":"<b>&</b>"`) {
		t.Fatalf("twin %s", tw)
	}
	bad := c.MustDo(t, "PUT", "/api/v1/rules/broken", `{"when":"telemetry.t <"}`, 400)
	var e apiErr
	if err := json.Unmarshal(bad, &e); err != nil || strings.Contains(string(bad), `\u003c`) {
		t.Fatalf("error %s", bad)
	}
}

// TestRuleUnderMissingEntity: a rule scoped under an entity that does not
// exist is refused (400), not stored to match nothing.
func TestRuleUnderMissingEntity(t *testing.T) {
	c := newServer(t)
	body := c.MustDo(t, "PUT", "/api/v1/rules/r1", `{"scope":{"under":"nowhere"},"when":"telemetry.t > 3","then":[{"alert":{"severity":"major"}}]}`, 400)
	if !strings.Contains(string(body), `scope.under: no entity \"nowhere\"`) {
		t.Fatalf("answer %s", body)
	}
	c.MustDo(t, "GET", "/api/v1/rules/r1", nil, 404)
	c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/rules/r1", `{"scope":{"under":"b1"},"when":"telemetry.t > 3","then":[{"alert":{"severity":"major"}}]}`, 201)
}
