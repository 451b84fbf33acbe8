package ws

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
)

// caller is the test Backend with the Caller capability.
type caller struct{ *topo }

func (caller) Call(_ context.Context, id, name string, args json.RawMessage) (json.RawMessage, error) {
	switch {
	case id == "ghost":
		return nil, errcode.New(errcode.NotFound, "entity %s not found", id)
	case name == "echo":
		return json.RawMessage(`{"entity":"` + id + `","args":` + string(orNull(args)) + `}`), nil
	case name == "nothing":
		return nil, nil
	case name == "busy":
		return nil, errcode.New(errcode.Conflict, "%s is busy", id)
	}
	return nil, errcode.New(errcode.UnknownOp, "no operation %q", name)
}

func orNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}

func hubURL(t *testing.T, b Backend) string {
	t.Helper()
	h := NewHub(Config{Authz: authz.New(authz.Config{AdminToken: "tok"})}, b)
	srv := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); srv.Close() })
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestCall(t *testing.T) {
	c := dial(t, hubURL(t, caller{&topo{}}))
	cases := []struct {
		name, frame string
		result      string // the reply's result; "" when it is an error
		code        string
	}{
		{"a result", `{"id":6,"op":"call","entity":"t1","name":"echo","args":{"setpoint":21}}`,
			`{"args":{"setpoint":21},"entity":"t1"}`, ""},
		{"no args", `{"id":6,"op":"call","entity":"t1","name":"echo"}`, `{"args":null,"entity":"t1"}`, ""},
		{"no result is null", `{"id":6,"op":"call","entity":"t1","name":"nothing"}`, `null`, ""},
		{"unknown operation", `{"id":6,"op":"call","entity":"t1","name":"nope"}`, "", "unknown_op"},
		{"the operation's code", `{"id":6,"op":"call","entity":"t1","name":"busy"}`, "", "conflict"},
		{"unknown entity", `{"id":6,"op":"call","entity":"ghost","name":"echo"}`, "", "not_found"},
		{"no name", `{"id":6,"op":"call","entity":"t1"}`, "", "bad_request"},
		{"no entity", `{"id":6,"op":"call","name":"echo"}`, "", "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, c, tc.frame)
			if r["id"] != 6.0 {
				t.Fatalf("reply %v", r)
			}
			if tc.code != "" {
				e, _ := r["error"].(map[string]any)
				if r["ok"] != false || e["code"] != tc.code || e["message"] == "" {
					t.Fatalf("reply %v, want error %s", r, tc.code)
				}
				return
			}
			got, _ := json.Marshal(r["result"])
			if _, has := r["result"]; !has || r["ok"] != true || string(got) != tc.result {
				t.Fatalf("reply %v, want result %s", r, tc.result)
			}
		})
	}
}

func TestCallWithoutCaller(t *testing.T) {
	c := dial(t, hubURL(t, &topo{}))
	r := send(t, c, `{"id":"x","op":"call","entity":"t1","name":"status"}`)
	if e, _ := r["error"].(map[string]any); r["id"] != "x" || r["ok"] != false || e["code"] != "unknown_op" {
		t.Fatalf("reply %v", r)
	}
}

var _ Caller = caller{}
