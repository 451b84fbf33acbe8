package node

import (
	"context"
	"crypto/tls"
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
func (n *node) startIoTHub(c *serveConfig, apiSrv *api.Server) error {
	policies, err := iothub.LoadPolicies(c.Data)
	if err != nil {
		return err
	}
	if c.HTTPS == "" {
		return nil
	}
	h, err := iothub.New(iothub.Config{Policies: policies, Query: apiSrv, BadRequest: api.QueryBadRequest,
		Registry: hubRegistry{n.sys}, NotFound: func(err error) bool { return errors.Is(err, actors.ErrNotFound) },
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
