package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/iothub"
	"github.com/twinmesh/twinmesh/persistence"
)

// startIoTHub loads (or generates) the hub's shared access policies and,
// with --https, serves the IoT Hub service API over TLS (CONTRACT section 9).
func (n *node) startIoTHub(c *serveConfig, apiSrv *api.Server, methods api.Methods) error {
	policies, err := iothub.LoadPolicies(c.Data)
	if err != nil {
		return err
	}
	if c.HTTPS == "" {
		return nil
	}
	h, err := iothub.New(iothub.Config{Policies: policies, Query: apiSrv, BadRequest: api.QueryBadRequest,
		Registry: hubRegistry{n.sys}, Methods: hubMethods{n.sys, methods}, Jobs: apiSrv.Jobs(), Status: func(err error) int { st, _ := api.ErrorOf(err); return st },
		Logger: n.log})
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return fmt.Errorf("--https: load --tls-cert/--tls-key: %w", err)
	}
	ln, err := net.Listen("tcp", c.HTTPS)
	if err != nil {
		return fmt.Errorf("https listener: %w", err)
	}
	n.httpsL = ln
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("https server", "err", err)
		}
	}()
	n.stops = append(n.stops, func(ctx context.Context) { _ = srv.Shutdown(ctx) })
	n.log.Info("listening", "listener", "https", "addr", ln.Addr().String())
	return nil
}

// hubRegistry reads identities and twins for the IoT Hub service API.
type hubRegistry struct{ sys *actors.System }

func (h hubRegistry) Device(ctx context.Context, id string) (iothub.DeviceInfo, error) {
	idn, err := h.sys.Identity(ctx, id)
	if err != nil {
		return iothub.DeviceInfo{}, err
	}
	d := iothub.DeviceInfo{ID: idn.DeviceID, PrimaryKey: idn.PrimaryKey, SecondaryKey: idn.SecondaryKey,
		Status: idn.Status, CreatedAt: idn.CreatedAt}
	if t, err := h.Twin(ctx, id); err == nil {
		d.Connected = t["connectionState"] == "Connected"
	}
	return d, nil
}

func (h hubRegistry) PutDevice(ctx context.Context, d iothub.DeviceInfo) (iothub.DeviceInfo, error) {
	old, err := h.sys.Identity(ctx, d.ID)
	if errors.Is(err, actors.ErrNotFound) {
		if old, _, err = h.sys.RegisterDevice(ctx, d.ID, "", nil); err != nil {
			return iothub.DeviceInfo{}, err
		}
	} else if err != nil {
		return iothub.DeviceInfo{}, err
	}
	spec := actors.IdentitySpec{PrimaryKey: d.PrimaryKey, SecondaryKey: d.SecondaryKey, Status: d.Status}
	if spec.PrimaryKey == "" {
		spec.PrimaryKey = old.PrimaryKey
	}
	if spec.SecondaryKey == "" {
		spec.SecondaryKey = old.SecondaryKey
	}
	if spec.Status == "" {
		spec.Status = old.Status
	}
	if _, _, err := h.sys.PutIdentity(ctx, d.ID, spec); err != nil {
		return iothub.DeviceInfo{}, err
	}
	return h.Device(ctx, d.ID)
}

func (h hubRegistry) DeleteDevice(ctx context.Context, id string) error {
	return h.sys.DeleteDevice(ctx, id)
}

func (h hubRegistry) ListDevices(ctx context.Context, max int) ([]iothub.DeviceInfo, error) {
	list, _, err := h.sys.ListIdentities(ctx, persistence.IdentityFilter{}, "", max)
	if err != nil {
		return nil, err
	}
	out := make([]iothub.DeviceInfo, len(list))
	for i, idn := range list {
		out[i] = iothub.DeviceInfo{ID: idn.DeviceID, PrimaryKey: idn.PrimaryKey, SecondaryKey: idn.SecondaryKey,
			Status: idn.Status, CreatedAt: idn.CreatedAt}
	}
	return out, nil
}

func (h hubRegistry) PatchTwin(ctx context.Context, id string, desired, tags json.RawMessage, ifVersion *int64) (map[string]any, error) {
	if _, err := h.sys.Identity(ctx, id); err != nil {
		return nil, err
	}
	if desired == nil && tags == nil {
		return h.Twin(ctx, id)
	}
	if _, _, err := h.sys.PatchTwin(ctx, id, actors.PatchBody{Desired: desired, Tags: tags}, ifVersion); err != nil {
		return nil, err
	}
	return h.Twin(ctx, id)
}

func (h hubRegistry) ReplaceTwin(ctx context.Context, id string, desired, tags map[string]any, ifVersion *int64) (map[string]any, error) {
	if _, err := h.sys.Identity(ctx, id); err != nil {
		return nil, err
	}
	if _, _, err := h.sys.ReplaceTwin(ctx, id, desired, tags, ifVersion); err != nil {
		return nil, err
	}
	return h.Twin(ctx, id)
}

func (h hubRegistry) Twin(ctx context.Context, id string) (map[string]any, error) {
	idn, err := h.sys.Identity(ctx, id)
	if err != nil {
		return nil, err // only devices have twins in IoT Hub's registry
	}
	ent, err := h.sys.GetEntity(ctx, id)
	if err != nil {
		return nil, err
	}
	doc, err := h.sys.StoredTwin(ctx, id)
	if err != nil {
		return nil, err
	}
	return api.QueryDoc(persistence.TwinRow{Entity: ent, Twin: doc, Identity: &idn}, nil)
}

var _ iothub.Registry = hubRegistry{}

// hubMethods invokes direct methods for the IoT Hub service API.
type hubMethods struct {
	sys     *actors.System
	methods api.Methods
}

func (h hubMethods) Invoke(ctx context.Context, id, method string, payload []byte) (int, []byte, error) {
	if _, err := h.sys.Identity(ctx, id); err != nil {
		return 0, nil, err
	}
	return h.methods.InvokeMethod(ctx, id, method, payload)
}
