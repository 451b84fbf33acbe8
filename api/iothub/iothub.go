// Package iothub serves the REST surface of Azure IoT Hub's service API
// that the official service SDKs use (CONTRACT section 9), over TLS, so
// that a back end written for IoT Hub works against a twinmesh node with a
// connection string from `twinmesh connection-string`.
//
// Requests carry `Authorization: SharedAccessSignature sr=…&sig=…&se=…&skn=<policy>`,
// signed with a key of one of the hub-level shared access policies of
// <data>/policies.json (LoadPolicies); each route needs a right of the
// policy (RegistryRead, RegistryWrite, ServiceConnect). The signature check
// is the device one: HMAC-SHA256, expiry, constant-time compare.
//
// Served so far: the query of twins, `POST /devices/query` with
// `x-ms-max-item-count` and `x-ms-continuation` (RegistryRead); the registry,
// `GET /devices[/{id}]` (RegistryRead), `PUT` and `DELETE /devices/{id}`
// (RegistryWrite); twins, `GET /twins/{id}` (RegistryRead), `PATCH` and
// `PUT /twins/{id}` with `If-Match` (ServiceConnect); direct methods, `POST
// /twins/{id}/methods` (ServiceConnect); jobs, `PUT /jobs/v2/{id}` and
// `POST /jobs/v2/{id}/cancel` (ServiceConnect), `GET /jobs/v2/{id}` and
// `GET /jobs/v2/query` (RegistryRead).
package iothub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/protocols/sas"
)

// Querier runs one page of a fleet query over the whole tree (package api's
// Server implements it). An error for a malformed query or token is one
// BadRequest reports true for.
type Querier interface {
	Query(ctx context.Context, query string, pageSize int, continuation string) (items []map[string]any, next string, err error)
}

// Registry reads and writes device identities and twins. Its errors are
// answered with the status Config.Status gives them.
type Registry interface {
	// Device returns a device's identity.
	Device(ctx context.Context, id string) (DeviceInfo, error)
	// PutDevice creates a device or updates its keys (empty: generated
	// for a new device, kept for an existing one) and status.
	PutDevice(ctx context.Context, d DeviceInfo) (DeviceInfo, error)
	// DeleteDevice deletes a device with its twin.
	DeleteDevice(ctx context.Context, id string) error
	// ListDevices returns up to max identities in ID order.
	ListDevices(ctx context.Context, max int) ([]DeviceInfo, error)
	// Twin returns a device's twin in IoT Hub's shape (deviceId, etag,
	// version, status, connectionState, tags, properties).
	Twin(ctx context.Context, id string) (map[string]any, error)
	// PatchTwin merges patches into desired and tags (either may be
	// nil); ifVersion, when set, must be the twin's version.
	PatchTwin(ctx context.Context, id string, desired, tags json.RawMessage, ifVersion *int64) (map[string]any, error)
	// ReplaceTwin replaces desired and tags (a nil map keeps that section).
	ReplaceTwin(ctx context.Context, id string, desired, tags map[string]any, ifVersion *int64) (map[string]any, error)
}

// Methods invokes direct methods on connected devices. Its errors are
// answered with the status Config.Status gives them (404 for a device
// without a session, 504 when it does not answer in time).
type Methods interface {
	Invoke(ctx context.Context, deviceID, method string, payload []byte) (status int, response []byte, err error)
}

// DeviceInfo is what the registry says of a device identity.
type DeviceInfo struct {
	ID, PrimaryKey, SecondaryKey, Status string
	Connected                            bool
	CreatedAt                            time.Time
}

// Config configures the handler.
type Config struct {
	// Policies are the hub's shared access policies.
	Policies []Policy
	// Query runs queries.
	Query Querier
	// Registry reads and writes identities and twins; nil leaves those
	// routes out.
	Registry Registry
	// Methods invokes direct methods; nil leaves POST /twins/{id}/methods
	// out.
	Methods Methods
	// Jobs schedules, reads and cancels jobs; nil leaves /jobs/v2 out.
	Jobs Jobs
	// Status maps an error of Registry, Methods or Jobs to an HTTP status (404 no such
	// device, 412 an If-Match mismatch, 400, 409, …); nil answers 500.
	Status func(error) int
	// BadRequest reports whether an error of Query is the caller's fault
	// (400); others are 500.
	BadRequest func(error) bool
	// Now is the clock for token expiry; nil is time.Now.
	Now func() time.Time
	// Logger; nil is slog.Default().
	Logger *slog.Logger
}

// Handler is the IoT Hub service API of a node.
type Handler struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
}

// New builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Query == nil {
		return nil, errors.New("iothub: Config.Query is required")
	}
	if len(cfg.Policies) == 0 {
		return nil, errors.New("iothub: no shared access policy")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BadRequest == nil {
		cfg.BadRequest = func(error) bool { return false }
	}
	if cfg.Status == nil {
		cfg.Status = func(error) int { return http.StatusInternalServerError }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger.With("component", "iothub")}
	h.mux.Handle("POST /devices/query", h.need(RegistryRead, h.query))
	if cfg.Registry != nil {
		h.mux.Handle("GET /devices/{id}", h.need(RegistryRead, h.device))
		h.mux.Handle("PUT /devices/{id}", h.need(RegistryWrite, h.putDevice))
		h.mux.Handle("DELETE /devices/{id}", h.need(RegistryWrite, h.deleteDevice))
		h.mux.Handle("GET /devices/{$}", h.need(RegistryRead, h.listDevices))
		h.mux.Handle("GET /devices", h.need(RegistryRead, h.listDevices))
		h.mux.Handle("GET /twins/{id}", h.need(RegistryRead, h.twin))
		h.mux.Handle("PATCH /twins/{id}", h.need(ServiceConnect, h.patchTwin))
		h.mux.Handle("PUT /twins/{id}", h.need(ServiceConnect, h.putTwin))
	}
	if cfg.Methods != nil {
		h.mux.Handle("POST /twins/{id}/methods", h.need(ServiceConnect, h.invoke))
	}
	if cfg.Jobs != nil {
		h.mux.Handle("GET /jobs/v2/query", h.need(RegistryRead, h.queryJobs))
		h.mux.Handle("PUT /jobs/v2/{id}", h.need(ServiceConnect, h.putJob))
		h.mux.Handle("GET /jobs/v2/{id}", h.need(RegistryRead, h.getJob))
		h.mux.Handle("POST /jobs/v2/{id}/cancel", h.need(ServiceConnect, h.cancelJob))
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, err := h.authenticate(r); err != nil {
			writeError(w, http.StatusUnauthorized, "IotHubUnauthorizedAccess", err.Error())
			return
		}
		writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s %s is not served by this node", r.Method, r.URL.Path))
	})
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// authenticate returns the policy that signed the request's token.
func (h *Handler) authenticate(r *http.Request) (Policy, error) {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return Policy{}, errors.New("no Authorization header: a SharedAccessSignature signed with a shared access policy is required")
	}
	t, err := sas.Parse(hdr)
	if err != nil {
		return Policy{}, err
	}
	if t.KeyName == "" {
		return Policy{}, errors.New("the token names no shared access policy (skn)")
	}
	for _, p := range h.cfg.Policies {
		if p.Name != t.KeyName {
			continue
		}
		keys := []string{p.PrimaryKey}
		if p.SecondaryKey != "" {
			keys = append(keys, p.SecondaryKey)
		}
		if err := sas.VerifyPolicy(t, keys, h.cfg.Now()); err != nil {
			return Policy{}, err
		}
		return p, nil
	}
	return Policy{}, fmt.Errorf("%w: no shared access policy %q", sas.ErrSignature, t.KeyName)
}

// need admits requests signed by a policy with right.
func (h *Handler) need(right string, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.authenticate(r)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "IotHubUnauthorizedAccess", err.Error())
			return
		}
		if !p.Has(right) {
			writeError(w, http.StatusUnauthorized, "IotHubUnauthorizedAccess",
				fmt.Sprintf("policy %s does not have the %s right", p.Name, right))
			return
		}
		next(w, r)
	})
}

// query answers POST /devices/query: the body {"query":"…"}, the page
// size in x-ms-max-item-count (default 100), the continuation in
// x-ms-continuation both ways; the answer is a JSON array.
func (h *Handler) query(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Query string `json:"query"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(&body); err != nil || body.Query == "" {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", `the body must be {"query":"SELECT …"}`)
		return
	}
	size := 100
	if v := r.Header.Get("x-ms-max-item-count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "ArgumentInvalid", "x-ms-max-item-count must be between 1 and 1000")
			return
		}
		size = n
	}
	items, next, err := h.cfg.Query.Query(r.Context(), body.Query, size, r.Header.Get("x-ms-continuation"))
	if err != nil {
		if h.cfg.BadRequest(err) {
			writeError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
			return
		}
		h.log.Error("query", "err", err)
		writeError(w, http.StatusInternalServerError, "ServerError", err.Error())
		return
	}
	if items == nil {
		items = []map[string]any{}
	}
	if next != "" {
		w.Header().Set("x-ms-continuation", next)
	}
	w.Header().Set("x-ms-item-type", "Twin")
	writeJSON(w, http.StatusOK, items)
}

// deviceJSON is a device identity in IoT Hub's shape.
func deviceJSON(d DeviceInfo) map[string]any {
	state := "Disconnected"
	if d.Connected {
		state = "Connected"
	}
	return map[string]any{
		"deviceId": d.ID, "generationId": strconv.FormatInt(d.CreatedAt.UnixNano(), 10), "etag": "",
		"status": d.Status, "statusReason": nil, "connectionState": state,
		"cloudToDeviceMessageCount": 0, "capabilities": map[string]bool{"iotEdge": false},
		"authentication": map[string]any{"type": "sas",
			"symmetricKey":   map[string]string{"primaryKey": d.PrimaryKey, "secondaryKey": d.SecondaryKey},
			"x509Thumbprint": map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil}},
	}
}

// device answers GET /devices/{id}.
func (h *Handler) device(w http.ResponseWriter, r *http.Request) {
	d, err := h.cfg.Registry.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		h.registryError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceJSON(d))
}

// putDevice answers PUT /devices/{id}: {"deviceId","status",
// "authentication":{"symmetricKey":{"primaryKey","secondaryKey"}}}.
func (h *Handler) putDevice(w http.ResponseWriter, r *http.Request) {
	var body struct {
		DeviceID       string `json:"deviceId"`
		Status         string `json:"status"`
		Authentication struct {
			Type         string `json:"type"`
			SymmetricKey struct {
				PrimaryKey   string `json:"primaryKey"`
				SecondaryKey string `json:"secondaryKey"`
			} `json:"symmetricKey"`
		} `json:"authentication"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", "the body must be a device: "+err.Error())
		return
	}
	id := r.PathValue("id")
	if body.DeviceID != "" && body.DeviceID != id {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("deviceId %q differs from the path's %q", body.DeviceID, id))
		return
	}
	if t := body.Authentication.Type; t != "" && t != "sas" {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("authentication type %q: only sas keys are served", t))
		return
	}
	d, err := h.cfg.Registry.PutDevice(r.Context(), DeviceInfo{ID: id, Status: body.Status,
		PrimaryKey: body.Authentication.SymmetricKey.PrimaryKey, SecondaryKey: body.Authentication.SymmetricKey.SecondaryKey})
	if err != nil {
		h.registryError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceJSON(d))
}

// deleteDevice answers DELETE /devices/{id} with 204.
func (h *Handler) deleteDevice(w http.ResponseWriter, r *http.Request) {
	if err := h.cfg.Registry.DeleteDevice(r.Context(), r.PathValue("id")); err != nil {
		h.registryError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listDevices answers GET /devices[?top=n]: up to n identities (default
// and most 1000), as IoT Hub's legacy device list does.
func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	top := 1000
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "ArgumentInvalid", "top must be between 1 and 1000")
			return
		}
		top = n
	}
	list, err := h.cfg.Registry.ListDevices(r.Context(), top)
	if err != nil {
		h.registryError(w, r, err)
		return
	}
	out := make([]map[string]any, len(list))
	for i, d := range list {
		out[i] = deviceJSON(d)
	}
	writeJSON(w, http.StatusOK, out)
}

// twin answers GET /twins/{id}.
func (h *Handler) twin(w http.ResponseWriter, r *http.Request) {
	t, err := h.cfg.Registry.Twin(r.Context(), r.PathValue("id"))
	h.writeTwin(w, r, t, err)
}

func (h *Handler) writeTwin(w http.ResponseWriter, r *http.Request, t map[string]any, err error) {
	if err != nil {
		h.registryError(w, r, err)
		return
	}
	if etag, ok := t["etag"].(string); ok {
		w.Header().Set("ETag", strconv.Quote(etag))
	}
	writeJSON(w, http.StatusOK, t)
}

// twinBody is what PATCH and PUT /twins/{id} take:
// {"tags":{…},"properties":{"desired":{…}}}.
type twinBody struct {
	Tags       json.RawMessage `json:"tags"`
	Properties struct {
		Desired json.RawMessage `json:"desired"`
	} `json:"properties"`
}

// ifMatch reads If-Match: an etag (the twin's version), or "*" / absent.
func ifMatch(r *http.Request) (*int64, error) {
	v := strings.Trim(strings.TrimPrefix(strings.TrimSpace(r.Header.Get("If-Match")), "W/"), `"`)
	if v == "" || v == "*" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("If-Match %q is not an etag of this hub", v)
	}
	return &n, nil
}

func (h *Handler) readTwinBody(w http.ResponseWriter, r *http.Request) (twinBody, *int64, bool) {
	var b twinBody
	ifv, err := ifMatch(r)
	if err == nil {
		err = json.NewDecoder(http.MaxBytesReader(w, r.Body, 256<<10)).Decode(&b)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return b, nil, false
	}
	return b, ifv, true
}

// patchTwin answers PATCH /twins/{id}: merge patches of tags and desired.
func (h *Handler) patchTwin(w http.ResponseWriter, r *http.Request) {
	b, ifv, ok := h.readTwinBody(w, r)
	if !ok {
		return
	}
	t, err := h.cfg.Registry.PatchTwin(r.Context(), r.PathValue("id"), nonNull(b.Properties.Desired), nonNull(b.Tags), ifv)
	h.writeTwin(w, r, t, err)
}

// putTwin answers PUT /twins/{id}: tags and desired replaced.
func (h *Handler) putTwin(w http.ResponseWriter, r *http.Request) {
	b, ifv, ok := h.readTwinBody(w, r)
	if !ok {
		return
	}
	var desired, tags map[string]any
	for _, sec := range []struct {
		raw json.RawMessage
		to  *map[string]any
	}{{b.Properties.Desired, &desired}, {b.Tags, &tags}} {
		if raw := nonNull(sec.raw); raw != nil {
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.UseNumber()
			if err := dec.Decode(sec.to); err != nil {
				writeError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
				return
			}
		}
	}
	delete(desired, "$metadata")
	delete(desired, "$version")
	if desired == nil && tags == nil {
		desired = map[string]any{}
	}
	t, err := h.cfg.Registry.ReplaceTwin(r.Context(), r.PathValue("id"), desired, tags, ifv)
	h.writeTwin(w, r, t, err)
}

// invoke answers POST /twins/{id}/methods: {"methodName","payload",
// "responseTimeoutInSeconds","connectTimeoutInSeconds"} → {"status","payload"}.
func (h *Handler) invoke(w http.ResponseWriter, r *http.Request) {
	var b struct {
		MethodName      string          `json:"methodName"`
		Payload         json.RawMessage `json:"payload"`
		ResponseTimeout int             `json:"responseTimeoutInSeconds"`
		ConnectTimeout  int             `json:"connectTimeoutInSeconds"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 128<<10)).Decode(&b); err != nil || b.MethodName == "" {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", `the body must be {"methodName":"…","payload":…}`)
		return
	}
	timeout := b.ResponseTimeout + b.ConnectTimeout
	if timeout <= 0 {
		timeout = 30
	}
	if timeout < 5 || timeout > 300 {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", "the timeouts must add up to between 5 and 300 seconds")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(timeout)*time.Second)
	defer cancel()
	payload := []byte(nonNull(b.Payload))
	if payload == nil {
		payload = []byte("null")
	}
	status, resp, err := h.cfg.Methods.Invoke(ctx, r.PathValue("id"), b.MethodName, payload)
	if err != nil {
		st := h.cfg.Status(err)
		switch st {
		case http.StatusNotFound:
			writeError(w, st, "DeviceNotOnline", err.Error())
		case http.StatusGatewayTimeout:
			writeError(w, st, "GatewayTimeoutException", err.Error())
		default:
			h.registryError(w, r, err)
		}
		return
	}
	if !json.Valid(resp) {
		resp, _ = json.Marshal(string(resp))
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": status, "payload": json.RawMessage(resp)})
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

// registryError answers an error of the Registry with its status and IoT
// Hub's name for it.
func (h *Handler) registryError(w http.ResponseWriter, r *http.Request, err error) {
	status := h.cfg.Status(err)
	code := map[int]string{http.StatusNotFound: "DeviceNotFound", http.StatusPreconditionFailed: "PreconditionFailed",
		http.StatusBadRequest: "ArgumentInvalid", http.StatusConflict: "DeviceAlreadyExists", http.StatusRequestEntityTooLarge: "MessageTooLarge",
		http.StatusServiceUnavailable: "ServiceUnavailable", http.StatusTooManyRequests: "ThrottlingException"}[status]
	if code == "" {
		status, code = http.StatusInternalServerError, "ServerError"
		h.log.Error("registry", "path", r.URL.Path, "err", err)
	}
	writeError(w, status, code, err.Error())
}

// writeError writes an error as IoT Hub does:
// {"Message":"ErrorCode:<code>;<message>"}; the SDKs read the code and
// message from it.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"Message": "ErrorCode:" + code + ";" + msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"Message":"ErrorCode:ServerError;encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
