package dtdl

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The spec-*.json files are the examples of the DTDL v3 language
// specification (github.com/Azure/opendigitaltwins-dtdl, DTDL.v3.md),
// written down from it; pnp-thermostat-v2.json is the IoT Plug and Play
// sample thermostat model (DTDL v2); thermostat-v3.json is twinmesh's own
// example, used by the node's end-to-end tests and the README.
func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, name string) *Interface {
	t.Helper()
	i, err := Parse(load(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return i
}

func TestParseSpecExamples(t *testing.T) {
	cases := []struct {
		file    string
		kind    error  // nil: accepted
		path    string // of the error
		message string // part of the error
	}{
		{file: "spec-interface.json"},
		{file: "spec-command.json"},
		{file: "spec-component-phone.json"},
		{file: "spec-component-camera.json"},
		{file: "spec-schemas.json"},
		{file: "spec-semantic.json"},
		{file: "pnp-thermostat-v2.json"},
		{file: "thermostat-v3.json"},
		{file: "spec-relationship.json", kind: ErrUnsupported, path: "$.contents[0]['@type']", message: "Relationship"},
		{file: "spec-extends.json", kind: ErrUnsupported, path: "$.extends", message: "extends"},
		{file: "spec-geospatial.json", kind: ErrUnsupported, path: "$.contents[0].schema", message: "geospatial schema point"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			_, err := Parse(load(t, c.file))
			if c.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.Is(err, c.kind) || !errors.As(err, &e) {
				t.Fatalf("got %v, want a *Error wrapping %v", err, c.kind)
			}
			if e.Path != c.path || !strings.Contains(e.Msg, c.message) {
				t.Fatalf("got %q at %s, want %q at %s", e.Msg, e.Path, c.message, c.path)
			}
		})
	}
}

func TestParseKeepsDisplayData(t *testing.T) {
	th := mustParse(t, "pnp-thermostat-v2.json")
	temp := th.TelemetryNamed("temperature")
	if temp == nil || temp.Unit != "degreeCelsius" || temp.DisplayName != "Temperature" ||
		len(temp.SemanticTypes) != 1 || temp.SemanticTypes[0] != "Temperature" || temp.Schema.Kind != Double {
		t.Fatalf("temperature: %+v", temp)
	}
	if p := th.PropertyNamed("targetTemperature"); p == nil || !p.Writable {
		t.Fatalf("targetTemperature: %+v", p)
	}
	if p := th.PropertyNamed("maxTempSinceLastReboot"); p == nil || p.Writable {
		t.Fatalf("maxTempSinceLastReboot: %+v", p)
	}
	cmd := th.CommandNamed("getMaxMinReport")
	if cmd == nil || cmd.Request.Schema.Kind != DateTime || cmd.Response.Schema.Kind != Object || len(cmd.Response.Schema.Fields) != 5 {
		t.Fatalf("getMaxMinReport: %+v", cmd)
	}
	s := mustParse(t, "spec-semantic.json")
	if s.DisplayName != "Sensor" {
		t.Fatalf("language map: display name %q, want the English one", s.DisplayName)
	}
	sc := mustParse(t, "spec-schemas.json")
	if ts := sc.TelemetryNamed("telemetry1").Schema; ts.Kind != Array || ts.ID != "" && ts.ID != "dtmi:com:example:doubleArray;1" || ts.ElementSchema.Kind != Double {
		t.Fatalf("schema by DTMI: %+v", ts)
	}
	en := sc.TelemetryNamed("state").Schema
	if en.Kind != Enum || en.ValueSchema != Integer || en.EnumValues[1].Value != int64(2) || en.EnumValues[1].DisplayName != "Online" {
		t.Fatalf("enum: %+v", en)
	}
	// The resolved view marshals (the dashboard reads it).
	b, err := json.Marshal(th)
	if err != nil || !strings.Contains(string(b), `"unit":"degreeCelsius"`) {
		t.Fatalf("marshal: %v %s", err, b)
	}
}

func TestParseErrors(t *testing.T) {
	const head = `{"@context":"dtmi:dtdl:context;3","@id":"dtmi:x:y;1","@type":"Interface","contents":[`
	cases := []struct {
		name, doc string
		kind      error
		path, msg string
	}{
		{"not json", `{`, ErrInvalid, "$", "not a JSON document"},
		{"trailing", `{} {}`, ErrInvalid, "$", "data after"},
		{"array of interfaces", `[]`, ErrUnsupported, "$", "array of interfaces"},
		{"no context", `{"@id":"dtmi:x:y;1","@type":"Interface"}`, ErrInvalid, "$", "@context is missing"},
		{"old context", `{"@context":"dtmi:dtdl:context;1","@id":"dtmi:x:y;1","@type":"Interface"}`, ErrUnsupported, "$['@context']", "language version"},
		{"other extension", `{"@context":["dtmi:dtdl:context;3","dtmi:dtdl:extension:historization;1"],"@id":"dtmi:x:y;1","@type":"Interface"}`,
			ErrUnsupported, "$['@context'][1]", "historization"},
		{"bad id", `{"@context":"dtmi:dtdl:context;3","@id":"urn:x","@type":"Interface"}`, ErrInvalid, "$['@id']", "not a DTMI"},
		{"not an interface", `{"@context":"dtmi:dtdl:context;3","@id":"dtmi:x:y;1","@type":"Telemetry"}`, ErrInvalid, "$['@type']", "must include Interface"},
		{"unknown member", head + `{"@type":"Telemetry","name":"t","schema":"double","writable":true}]}`, ErrInvalid, "$.contents[0].writable", `Telemetry has no member "writable"`},
		{"bad name", head + `{"@type":"Telemetry","name":"1t","schema":"double"}]}`, ErrInvalid, "$.contents[0].name", "not a DTDL name"},
		{"duplicate name", head + `{"@type":"Telemetry","name":"t","schema":"double"},{"@type":"Property","name":"t","schema":"double"}]}`,
			ErrInvalid, "$.contents[1].name", "already the name of $.contents[0]"},
		{"unknown schema", head + `{"@type":"Telemetry","name":"t","schema":"real"}]}`, ErrInvalid, "$.contents[0].schema", `unknown schema "real"`},
		{"missing schema", head + `{"@type":"Telemetry","name":"t"}]}`, ErrInvalid, "$.contents[0]", "schema is missing"},
		{"writable not bool", head + `{"@type":"Property","name":"p","schema":"double","writable":"yes"}]}`, ErrInvalid, "$.contents[0].writable", "true or false"},
		{"no class", head + `{"@type":"Temperature","name":"t","schema":"double"}]}`, ErrInvalid, "$.contents[0]['@type']", "no content class"},
		{"enum value type", head + `{"@type":"Property","name":"p","schema":{"@type":"Enum","valueSchema":"integer","enumValues":[{"name":"a","enumValue":"x"}]}}]}`,
			ErrInvalid, "$.contents[0].schema.enumValues[0].enumValue", "valueSchema is integer"},
		{"enum duplicate", head + `{"@type":"Property","name":"p","schema":{"@type":"Enum","valueSchema":"string","enumValues":[{"name":"a","enumValue":"x"},{"name":"b","enumValue":"x"}]}}]}`,
			ErrInvalid, "$.contents[0].schema.enumValues[1].enumValue", "declared twice"},
		{"map key", head + `{"@type":"Property","name":"p","schema":{"@type":"Map","mapKey":{"name":"k","schema":"integer"},"mapValue":{"name":"v","schema":"double"}}}]}`,
			ErrInvalid, "$.contents[0].schema.mapKey.schema", "schema is string"},
		{"undeclared ref", head + `{"@type":"Telemetry","name":"t","schema":"dtmi:x:s;1"}]}`, ErrInvalid, "$.contents[0].schema", "not declared"},
		{"recursive schema", head + `{"@type":"Telemetry","name":"t","schema":"dtmi:x:s;1"}],"schemas":[{"@id":"dtmi:x:s;1","@type":"Array","elementSchema":"dtmi:x:s;1"}]}`,
			ErrInvalid, "$.schemas[0].elementSchema", "refers to itself"},
		{"too deep", head + `{"@type":"Telemetry","name":"t","schema":` + strings.Repeat(`{"@type":"Array","elementSchema":`, 9) + `"double"` + strings.Repeat(`}`, 9) + `}]}`,
			ErrInvalid, "$.contents[0].schema.elementSchema.elementSchema.elementSchema.elementSchema.elementSchema.elementSchema.elementSchema.elementSchema", "deeper than 8"},
		{"command type in v3", head + `{"@type":"Command","name":"c","commandType":"synchronous"}]}`, ErrInvalid, "$.contents[0].commandType", `no member "commandType"`},
		{"component ref", head + `{"@type":"Component","name":"c","schema":"camera"}]}`, ErrInvalid, "$.contents[0].schema", "not a DTMI"},
		{"unit", head + `{"@type":"Telemetry","name":"t","schema":"double","unit":3}]}`, ErrInvalid, "$.contents[0].unit", "unit name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			var e *Error
			if !errors.Is(err, c.kind) || !errors.As(err, &e) {
				t.Fatalf("got %v, want a *Error wrapping %v", err, c.kind)
			}
			if e.Path != c.path || !strings.Contains(e.Msg, c.msg) {
				t.Fatalf("got %q at %s, want %q at %s", e.Msg, e.Path, c.msg, c.path)
			}
		})
	}
}

func TestInlineComponentAndLink(t *testing.T) {
	phone := mustParse(t, "spec-component-phone.json")
	camera := mustParse(t, "spec-component-camera.json")
	if got := phone.ComponentIDs(); len(got) != 1 || got[0] != camera.ID {
		t.Fatalf("component IDs %v", got)
	}
	if err := phone.ValidateReported([]byte(`{"frontCamera":{"__t":"c","imageFormat":"png"}}`)); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("unlinked component: %v", err)
	}
	phone.Link(func(id string) *Interface {
		if id == camera.ID {
			return camera
		}
		return nil
	})
	if err := phone.ValidateReported([]byte(`{"frontCamera":{"__t":"c","imageFormat":"png"}}`)); err != nil {
		t.Fatal(err)
	}
	doc := `{"@context":"dtmi:dtdl:context;3","@id":"dtmi:x:y;1","@type":"Interface","contents":[
		{"@type":"Component","name":"lamp","schema":{"@id":"dtmi:x:lamp;1","@type":"Interface","contents":[
			{"@type":"Property","name":"on","writable":true,"schema":"boolean"}]}}]}`
	in, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	in.Link(func(string) *Interface { return nil }) // an inline interface stays
	if err := in.ValidateDesired([]byte(`{"lamp":{"on":true}}`)); err != nil {
		t.Fatal(err)
	}
	if err := in.ValidateDesired([]byte(`{"lamp":{"on":"yes"}}`)); err == nil || !strings.Contains(err.Error(), "$.lamp.on: want boolean") {
		t.Fatalf("inline component: %v", err)
	}
}
