package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors/dtdl"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// EventValidation is published when a device's data or a client's request
// does not match the device's model (CONTRACT section 12). Its data is
// {"model","kind","reason"}; kind is one of the Validate* constants.
const EventValidation = "validation"

// What was validated, in validation events and metrics.
const (
	ValidateTelemetry = "telemetry"
	ValidateReported  = "reported"
	ValidateDesired   = "desired"
	ValidateCommand   = "command"
)

// maxCachedDevices bounds the device → model ID cache; past it the cache
// starts over (each device then costs one identity read again).
const maxCachedDevices = 1 << 17

// modelSet is an immutable snapshot of the parsed models, components
// linked; validation reads it without locks.
type modelSet struct{ byID map[string]*dtdl.Interface }

// modelRegistry caches the parsed models and which model each device
// follows, so that validating a message costs two map lookups and the
// validation, never a store read or a parse.
type modelRegistry struct {
	set      atomic.Pointer[modelSet]
	mu       sync.Mutex // serialises rebuilds of set
	devMu    sync.RWMutex
	devices  map[string]string // device ID → model ID ("" for none)
	failures *prometheus.CounterVec
}

func newModelRegistry(reg prometheus.Registerer) *modelRegistry {
	r := &modelRegistry{devices: map[string]string{},
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinmesh_model_validation_failures_total",
			Help: "Messages and requests refused because they do not match the device's DTDL model, by model, device and kind (telemetry, reported, desired, command).",
		}, []string{"model", "device", "kind"})}
	r.set.Store(&modelSet{byID: map[string]*dtdl.Interface{}})
	if reg != nil {
		reg.MustRegister(r.failures)
	}
	return r
}

// forgetDevice drops a device's cached model ID (its identity changed).
func (r *modelRegistry) forgetDevice(id string) {
	r.devMu.Lock()
	delete(r.devices, id)
	r.devMu.Unlock()
}

// loadModels parses every stored model and links components; a stored
// model that no longer parses is logged and skipped, not fatal.
func (s *System) loadModels() error {
	docs, err := s.store.ListDocs(persistence.BucketModels, "")
	if err != nil {
		return fmt.Errorf("load models: %w", err)
	}
	s.models.mu.Lock()
	defer s.models.mu.Unlock()
	set := &modelSet{byID: make(map[string]*dtdl.Interface, len(docs))}
	for id, doc := range docs {
		in, err := dtdl.Parse(doc)
		if err != nil {
			s.log.Error("stored model does not parse; skipped", "model", id, "err", err)
			continue
		}
		set.byID[id] = in
	}
	for _, in := range set.byID {
		in.Link(func(id string) *dtdl.Interface { return set.byID[id] })
	}
	s.models.set.Store(set)
	return nil
}

// PutModel checks and stores a DTDL interface under its DTMI, which must
// equal the document's @id, and applies it to new messages at once (what
// was accepted before is not re-validated). It reports whether the model
// is new. A model that does not parse is ErrBadRequest with the parser's
// path and reason.
func (s *System) PutModel(ctx context.Context, id string, doc []byte) (bool, error) {
	if !dtdl.ValidDTMI(id) {
		return false, errcode.New(errcode.BadRequest, "%q is not a DTMI (dtmi:com:example:Thermostat;1)", id)
	}
	in, err := dtdl.Parse(doc)
	if err != nil {
		return false, errcode.New(errcode.BadRequest, "model %s: %w", id, err)
	}
	if in.ID != id {
		return false, errcode.New(errcode.BadRequest, "the model's @id %s does not match the path %s", in.ID, id)
	}
	_, err = s.store.GetDoc(persistence.BucketModels, id)
	created := errors.Is(err, persistence.ErrNotFound)
	if err := s.commitCatalog(ctx, persistence.PutDoc(persistence.BucketModels, id, doc), untombstone("models/"+id)); err != nil {
		return false, fmt.Errorf("store model %s: %w", id, err)
	}
	return created, s.loadModels()
}

// GetModel returns a stored model document as it was stored.
func (s *System) GetModel(_ context.Context, id string) (json.RawMessage, error) {
	doc, err := s.store.GetDoc(persistence.BucketModels, id)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, errcode.New(errcode.NotFound, "model %s is not registered", id)
	}
	return doc, err
}

// Model returns the parsed model: schemas resolved, components linked.
func (s *System) Model(_ context.Context, id string) (*dtdl.Interface, error) {
	if in := s.models.set.Load().byID[id]; in != nil {
		return in, nil
	}
	return nil, errcode.New(errcode.NotFound, "model %s is not registered", id)
}

// Models lists the stored model documents in DTMI order.
func (s *System) Models(_ context.Context) ([]json.RawMessage, error) {
	docs, err := s.store.ListDocs(persistence.BucketModels, "")
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(docs))
	for id := range docs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]json.RawMessage, len(ids))
	for i, id := range ids {
		out[i] = docs[id]
	}
	return out, nil
}

// DeleteModel removes a model no device and no other model uses; one in
// use is ErrConflict naming a user.
func (s *System) DeleteModel(ctx context.Context, id string) error {
	if _, err := s.GetModel(ctx, id); err != nil {
		return err
	}
	for mid, in := range s.models.set.Load().byID {
		for _, c := range in.Components {
			if c.SchemaID == id && mid != id {
				return errcode.New(errcode.Conflict, "model %s is in use: component %q of %s", id, c.Name, mid)
			}
		}
	}
	after := ""
	for {
		ents, next, err := s.store.ListEntities(persistence.EntityFilter{}, after, 1000)
		if err != nil {
			return fmt.Errorf("delete model %s: %w", id, err)
		}
		for _, e := range ents {
			if idn, err := s.store.GetIdentity(e.ID); err == nil && idn.ModelID == id {
				return errcode.New(errcode.Conflict, "model %s is in use by device %s", id, e.ID)
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	if err := s.commitCatalog(ctx, persistence.DeleteDoc(persistence.BucketModels, id), s.tombstone("models/"+id)); err != nil {
		return fmt.Errorf("delete model %s: %w", id, err)
	}
	return s.loadModels()
}

// SetDeviceModel records the model a device follows ("" for none). With
// known, the model must be registered (a client naming it at registration);
// without, any DTMI is recorded (a device announcing what it implements
// when it connects, IoT Plug and Play): data of a device whose model is not
// registered is not validated.
func (s *System) SetDeviceModel(ctx context.Context, deviceID, modelID string, known bool) error {
	if modelID != "" && !dtdl.ValidDTMI(modelID) {
		return errcode.New(errcode.BadRequest, "modelId %q is not a DTMI (dtmi:com:example:Thermostat;1)", modelID)
	}
	if known && modelID != "" && s.models.set.Load().byID[modelID] == nil {
		return errcode.New(errcode.BadRequest, "modelId %s is not registered; PUT /api/v1/models/%s first", modelID, modelID)
	}
	idn, err := s.Identity(ctx, deviceID)
	if err != nil {
		return err
	}
	if idn.ModelID == modelID {
		return nil
	}
	idn.ModelID = modelID
	if err := s.commitCatalog(ctx, persistence.PutIdentity(idn)); err != nil {
		return fmt.Errorf("store identity %s: %w", deviceID, err)
	}
	s.models.forgetDevice(deviceID)
	s.publishIdentity(idn)
	return nil
}

// DeviceModelID returns the DTMI of the device's model, "" for none (or an
// unknown device). It reads the store only the first time per device.
func (s *System) DeviceModelID(deviceID string) string {
	r := s.models
	r.devMu.RLock()
	mid, ok := r.devices[deviceID]
	r.devMu.RUnlock()
	if ok {
		return mid
	}
	// An entity without an identity (a room, or a device not registered
	// yet) is cached as "" too: registering it publishes an identity event,
	// which drops the entry on every member.
	idn, err := s.store.GetIdentity(deviceID)
	if err != nil && !errors.Is(err, persistence.ErrNotFound) {
		return "" // not cached: a read error may pass
	}
	r.devMu.Lock()
	if len(r.devices) >= maxCachedDevices {
		r.devices = map[string]string{}
	}
	r.devices[deviceID] = idn.ModelID
	r.devMu.Unlock()
	return idn.ModelID
}

// deviceModel returns the parsed model of a device, nil when it has none
// or its model is not registered.
func (s *System) deviceModel(deviceID string) (*dtdl.Interface, string) {
	mid := s.DeviceModelID(deviceID)
	if mid == "" {
		return nil, ""
	}
	return s.models.set.Load().byID[mid], mid
}

// CheckTelemetry validates a telemetry message of a device against its
// model; component is IoT Plug and Play's $.sub ("" for the interface
// itself). A device without a (registered) model passes. A mismatch is
// ErrBadRequest carrying the reason, counted and published as a
// validation event.
func (s *System) CheckTelemetry(deviceID, component string, payload []byte) error {
	in, mid := s.deviceModel(deviceID)
	if in == nil {
		return nil
	}
	return s.invalid(deviceID, mid, ValidateTelemetry, in.ValidateTelemetry(component, payload))
}

// CheckReported validates a reported-properties patch from a device.
func (s *System) CheckReported(deviceID string, patch []byte) error {
	in, mid := s.deviceModel(deviceID)
	if in == nil {
		return nil
	}
	return s.invalid(deviceID, mid, ValidateReported, in.ValidateReported(patch))
}

// CheckDesired validates a desired-properties patch for a device.
func (s *System) CheckDesired(deviceID string, patch []byte) error {
	if len(patch) == 0 {
		return nil
	}
	in, mid := s.deviceModel(deviceID)
	if in == nil {
		return nil
	}
	return s.invalid(deviceID, mid, ValidateDesired, in.ValidateDesired(patch))
}

// CheckCommand validates a direct method call by command name and
// request schema.
func (s *System) CheckCommand(deviceID, method string, payload []byte) error {
	in, mid := s.deviceModel(deviceID)
	if in == nil {
		return nil
	}
	return s.invalid(deviceID, mid, ValidateCommand, in.ValidateCommand(method, payload))
}

// invalid turns a validation error into the caller's 400, and counts and
// publishes it.
func (s *System) invalid(deviceID, modelID, kind string, err error) error {
	if err == nil {
		return nil
	}
	s.models.failures.WithLabelValues(modelID, deviceID, kind).Inc()
	data, _ := json.Marshal(map[string]string{"model": modelID, "kind": kind, "reason": err.Error()})
	s.publish(Event{Type: EventValidation, Entity: deviceID, Data: data, TS: s.cfg.Now().UTC()})
	return errcode.New(errcode.BadRequest, "%s does not match model %s: %w", kind, modelID, err)
}
