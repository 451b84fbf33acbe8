package actors_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/dtdl"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// TestModelsFollowTheCatalog: a model written into the store by another
// member (replication) applies once CatalogChanged names its bucket; a
// device's model follows its identity; a changed model applies to the
// next message; components link across models.
func TestModelsFollowTheCatalog(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "m.db"), options{})
	s := e.sys
	doc, err := os.ReadFile("dtdl/testdata/thermostat-v3.json")
	if err != nil {
		t.Fatal(err)
	}
	const model = "dtmi:twinmesh:example:Thermostat;1"
	if _, _, err := s.RegisterDevice(ctx(t), "d1", "device", nil); err != nil {
		t.Fatal(err)
	}
	// Unknown model at registration: refused; announced by the device: kept, not checked.
	if err := s.SetDeviceModel(ctx(t), "d1", model, true); !errors.Is(err, errcode.ErrBadRequest) {
		t.Fatalf("unregistered model accepted: %v", err)
	}
	if err := s.SetDeviceModel(ctx(t), "d1", model, false); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckTelemetry("d1", "", []byte(`{"temperature":"hot"}`)); err != nil {
		t.Fatalf("a device whose model is not registered is not checked: %v", err)
	}

	// Another member stored the model: it applies once the catalog change is told.
	if err := e.db.Commit(ctx(t), persistence.PutDoc(persistence.BucketModels, model, doc)); err != nil {
		t.Fatal(err)
	}
	s.CatalogChanged([]string{string(persistence.BucketModels)})
	err = s.CheckTelemetry("d1", "", []byte(`{"temperature":"hot"}`))
	if !errors.Is(err, errcode.ErrBadRequest) || !errors.Is(err, dtdl.ErrMismatch) || !strings.Contains(err.Error(), "$.temperature: want double") {
		t.Fatalf("after the catalog change: %v", err)
	}
	if ev := e.events.of("d1", actors.EventValidation); len(ev) != 1 || !strings.Contains(string(ev[0].Data), `"kind":"telemetry"`) {
		t.Fatalf("validation events %v", ev)
	}

	// A new version of the model applies to the next message.
	v2 := strings.Replace(string(doc), `"name": "temperature", "displayName": "Temperature",
      "schema": "double"`, `"name": "temperature", "displayName": "Temperature",
      "schema": "string"`, 1)
	if v2 == string(doc) {
		t.Fatal("the test's edit of the model did not apply")
	}
	if _, err := s.PutModel(ctx(t), model, []byte(v2)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckTelemetry("d1", "", []byte(`{"temperature":"hot"}`)); err != nil {
		t.Fatalf("new version: %v", err)
	}

	// A component names another model; the model it names cannot go while used.
	room := `{"@context":"dtmi:dtdl:context;3","@id":"dtmi:twinmesh:example:Room;1","@type":"Interface","contents":[
		{"@type":"Component","name":"thermostat","schema":"dtmi:twinmesh:example:Thermostat;1"}]}`
	if _, err := s.PutModel(ctx(t), "dtmi:twinmesh:example:Room;1", []byte(room)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RegisterDevice(ctx(t), "r1", "device", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDeviceModel(ctx(t), "r1", "dtmi:twinmesh:example:Room;1", true); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckReported("r1", []byte(`{"thermostat":{"__t":"c","mode":"heat"}}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckTelemetry("r1", "thermostat", []byte(`{"state":"cooling"}`)); err == nil || !strings.Contains(err.Error(), `$.state: want one of "idle", "heating"`) {
		t.Fatalf("component telemetry ($.sub): %v", err)
	}
	if err := s.CheckTelemetry("r1", "thermostat", []byte(`{"state":"idle"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckCommand("r1", "thermostat*reboot", []byte(`"now"`)); err == nil || !strings.Contains(err.Error(), "want integer") {
		t.Fatalf("component command: %v", err)
	}
	if err := s.DeleteModel(ctx(t), model); !errors.Is(err, errcode.ErrConflict) || !strings.Contains(err.Error(), "component \"thermostat\"") {
		t.Fatalf("delete a model a component uses: %v", err)
	}
}
