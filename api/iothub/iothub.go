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
// Served so far (all RegistryRead): the query of twins, `POST /devices/query`
// with `x-ms-max-item-count` and `x-ms-continuation`; a device's identity,
// `GET /devices/{id}`; its twin, `GET /twins/{id}`.
package iothub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/twinmesh/twinmesh/protocols/sas"
)

// Querier runs one page of a fleet query over the whole tree (package api's
// Server implements it). An error for a malformed query or token is one
// BadRequest reports true for.
type Querier interface {
	Query(ctx context.Context, query string, pageSize int, continuation string) (items []map[string]any, next string, err error)
}

// Registry reads device identities and twins for GET /devices/{id} and
// GET /twins/{id}; an error NotFound reports true for answers 404.
type Registry interface {
	// Device returns a device's identity.
	Device(ctx context.Context, id string) (DeviceInfo, error)
	// Twin returns a device's twin in IoT Hub's shape (deviceId, etag,
	// version, status, connectionState, tags, properties).
	Twin(ctx context.Context, id string) (map[string]any, error)
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
	// Registry reads identities and twins; nil leaves those routes out.
	Registry Registry
	// NotFound reports whether an error of Registry means no such device.
	NotFound func(error) bool
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
	if cfg.NotFound == nil {
		cfg.NotFound = func(error) bool { return false }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger.With("component", "iothub")}
	h.mux.Handle("POST /devices/query", h.need(RegistryRead, h.query))
	if cfg.Registry != nil {
		h.mux.Handle("GET /devices/{id}", h.need(RegistryRead, h.device))
		h.mux.Handle("GET /twins/{id}", h.need(RegistryRead, h.twin))
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

// device answers GET /devices/{id} with the identity in IoT Hub's shape.
func (h *Handler) device(w http.ResponseWriter, r *http.Request) {
	d, err := h.cfg.Registry.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		h.registryError(w, r, err)
		return
	}
	state := "Disconnected"
	if d.Connected {
		state = "Connected"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"deviceId": d.ID, "generationId": strconv.FormatInt(d.CreatedAt.UnixNano(), 10), "etag": "",
		"status": d.Status, "statusReason": nil, "connectionState": state,
		"cloudToDeviceMessageCount": 0, "capabilities": map[string]bool{"iotEdge": false},
		"authentication": map[string]any{"type": "sas",
			"symmetricKey":   map[string]string{"primaryKey": d.PrimaryKey, "secondaryKey": d.SecondaryKey},
			"x509Thumbprint": map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil}},
	})
}

// twin answers GET /twins/{id}.
func (h *Handler) twin(w http.ResponseWriter, r *http.Request) {
	t, err := h.cfg.Registry.Twin(r.Context(), r.PathValue("id"))
	if err != nil {
		h.registryError(w, r, err)
		return
	}
	if etag, ok := t["etag"].(string); ok {
		w.Header().Set("ETag", strconv.Quote(etag))
	}
	writeJSON(w, http.StatusOK, t)
}

func (h *Handler) registryError(w http.ResponseWriter, r *http.Request, err error) {
	if h.cfg.NotFound(err) {
		writeError(w, http.StatusNotFound, "DeviceNotFound", fmt.Sprintf("device %s does not exist", r.PathValue("id")))
		return
	}
	h.log.Error("registry", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "ServerError", err.Error())
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
