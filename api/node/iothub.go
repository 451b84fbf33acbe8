package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/iothub"
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
	h, err := iothub.New(iothub.Config{Policies: policies, Query: apiSrv, BadRequest: api.QueryBadRequest, Logger: n.log})
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
