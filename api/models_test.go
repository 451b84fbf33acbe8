package api_test

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
)

const thermostatID = "dtmi:twinmesh:example:Thermostat;1"

func TestModelsREST(t *testing.T) {
	c := newServer(t)
	model, err := os.ReadFile("../actors/dtdl/testdata/thermostat-v3.json")
	if err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/models/" + url.PathEscape(thermostatID)
	errorOf := func(b []byte) string {
		var e apiErr
		_ = json.Unmarshal(b, &e)
		return e.Error.Message
	}

	// An invalid model is refused with what is wrong and where.
	bad := strings.Replace(string(model), `"schema": "double", "unit": "degreeCelsius", "writable": true`, `"schema": "real", "unit": "degreeCelsius", "writable": true`, 1)
	if msg := errorOf(c.MustDo(t, "PUT", path, bad, 400)); !strings.Contains(msg, `$.contents[2].schema: unknown schema "real"`) {
		t.Fatalf("invalid model: %s", msg)
	}
	if msg := errorOf(c.MustDo(t, "PUT", "/api/v1/models/"+url.PathEscape("dtmi:other:Model;1"), model, 400)); !strings.Contains(msg, "does not match the path") {
		t.Fatalf("id mismatch: %s", msg)
	}
	c.MustDo(t, "PUT", path, model, 201)
	c.MustDo(t, "PUT", path, model, 200)
	if got := c.MustDo(t, "GET", path, nil, 200); !json.Valid(got) || !strings.Contains(string(got), `"targetTemperature"`) {
		t.Fatalf("get: %s", got)
	}
	var view struct {
		Properties []struct {
			Name, Unit string
			Writable   bool
		}
	}
	if err := json.Unmarshal(c.MustDo(t, "GET", path+"?view=resolved", nil, 200), &view); err != nil || len(view.Properties) != 4 ||
		view.Properties[0].Unit != "degreeCelsius" || !view.Properties[0].Writable {
		t.Fatalf("resolved view: %+v %v", view, err)
	}
	var list struct{ Items []json.RawMessage }
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/models", nil, 200), &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}

	// A device names its model at registration; the twin shows it.
	if msg := errorOf(c.MustDo(t, "PUT", "/api/v1/devices/th-0", `{"modelId":"dtmi:unknown:Model;1"}`, 400)); !strings.Contains(msg, "not registered") {
		t.Fatalf("unknown model: %s", msg)
	}
	if got := c.MustDo(t, "PUT", "/api/v1/devices/th-1", `{"modelId":"`+thermostatID+`"}`, 201); !strings.Contains(string(got), `"modelId":"`+thermostatID+`"`) {
		t.Fatalf("device: %s", got)
	}
	if got := c.MustDo(t, "GET", "/api/v1/twins/th-1", nil, 200); !strings.Contains(string(got), `"modelId":"`+thermostatID+`"`) {
		t.Fatalf("twin: %s", got)
	}
	c.MustDo(t, "PUT", "/api/v1/devices/plain-1", nil, 201)
	if got := c.MustDo(t, "GET", "/api/v1/twins/plain-1", nil, 200); strings.Contains(string(got), "modelId") {
		t.Fatalf("a device without a model has no modelId: %s", got)
	}

	// Desired patches and method calls that do not match get 400 with the reason.
	if msg := errorOf(c.MustDo(t, "PATCH", "/api/v1/twins/th-1", `{"desired":{"mode":"turbo"}}`, 400)); !strings.Contains(msg, `desired does not match model `+thermostatID+`: $.mode: want one of "off", "heat", "eco", got the string "turbo"`) {
		t.Fatalf("desired: %s", msg)
	}
	if msg := errorOf(c.MustDo(t, "PATCH", "/api/v1/twins/th-1", `{"desired":{"serialNumber":"x"}}`, 400)); !strings.Contains(msg, "read-only") {
		t.Fatalf("read-only: %s", msg)
	}
	if got := c.MustDo(t, "PATCH", "/api/v1/twins/th-1", `{"desired":{"mode":"eco","targetTemperature":20.5,"enabled":true}}`, 200); !strings.Contains(string(got), `"modelId":"`+thermostatID+`"`) {
		t.Fatalf("the twin a PATCH returns lacks modelId: %s", got)
	}
	c.MustDo(t, "PATCH", "/api/v1/twins/plain-1", `{"desired":{"mode":"turbo"}}`, 200) // no model: as before
	if msg := errorOf(c.MustDo(t, "POST", "/api/v1/devices/th-1/methods/getMaxMinReport", `{"payload":"yesterday"}`, 400)); !strings.Contains(msg, "want a dateTime") {
		t.Fatalf("command: %s", msg)
	}
	if msg := errorOf(c.MustDo(t, "POST", "/api/v1/devices/th-1/methods/selfDestruct", `{"payload":{}}`, 400)); !strings.Contains(msg, `"selfDestruct" is not a command`) {
		t.Fatalf("unknown command: %s", msg)
	}
	// A valid call passes validation and reaches the adapter (none here).
	c.MustDo(t, "POST", "/api/v1/devices/th-1/methods/reboot", `{"payload":5}`, 404)
	if got := string(c.MustDo(t, "GET", "/metrics", nil, 200)); !strings.Contains(got, `twinmesh_model_validation_failures_total{device="th-1",kind="desired",model="`+thermostatID+`"} 2`) {
		t.Fatalf("metrics lack the failures")
	}

	// A model in use cannot be deleted; once unused it can.
	if msg := errorOf(c.MustDo(t, "DELETE", path, nil, 409)); !strings.Contains(msg, "in use by device th-1") {
		t.Fatalf("delete in use: %s", msg)
	}
	c.MustDo(t, "PUT", "/api/v1/devices/th-1", `{"modelId":""}`, 200)
	c.MustDo(t, "PATCH", "/api/v1/twins/th-1", `{"desired":{"mode":"turbo"}}`, 200)
	c.MustDo(t, "DELETE", path, nil, 200)
	c.MustDo(t, "GET", path, nil, 404)
}
