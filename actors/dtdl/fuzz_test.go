package dtdl

import (
	"encoding/json"
	"errors"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, name := range []string{"spec-interface.json", "spec-command.json", "spec-component-phone.json",
		"spec-schemas.json", "spec-semantic.json", "spec-relationship.json", "pnp-thermostat-v2.json", "thermostat-v3.json"} {
		f.Add(load(f, name), []byte(`{"temperature":1}`))
	}
	f.Add([]byte(`{"@context":"dtmi:dtdl:context;3","@id":"dtmi:x:y;1","@type":"Interface","contents":[{"@type":"Component","name":"c","schema":{"@id":"dtmi:x:z;1","@type":"Interface"}}]}`), []byte(`{"c":{"__t":"c"}}`))
	f.Add([]byte(`[]`), []byte(`null`))
	f.Add([]byte(``), []byte(``))
	f.Fuzz(func(t *testing.T, doc, payload []byte) {
		in, err := Parse(doc)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) || e.Path == "" || e.Path[0] != '$' {
				t.Fatalf("error %#v is not a *Error with a path wrapping ErrInvalid or ErrUnsupported", err)
			}
			return
		}
		if _, err := json.Marshal(in); err != nil {
			t.Fatalf("marshal the resolved view: %v", err)
		}
		in.Link(func(string) *Interface { return in })
		// Validation never panics, and refuses only with ErrMismatch.
		for _, err := range []error{
			in.ValidateTelemetry("", payload), in.ValidateReported(payload), in.ValidateDesired(payload),
			in.ValidateCommand("x", payload),
		} {
			if err != nil && !errors.Is(err, ErrMismatch) {
				t.Fatalf("validation error %v does not wrap ErrMismatch", err)
			}
		}
		for _, c := range in.Commands {
			if err := in.ValidateCommand(c.Name, payload); err != nil && !errors.Is(err, ErrMismatch) {
				t.Fatal(err)
			}
		}
	})
}
