package streams

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Signaller asks a device, over its live session wherever it is, to open
// stream name by connecting a WebSocket to url with token, and returns the
// status the device answered (actors.System.RouteStreams of the MQTT
// adapter implements it). Errors carry errcode.NotConnected and
// errcode.Timeout. It must be safe for concurrent use.
type Signaller interface {
	RequestStream(ctx context.Context, deviceID, name, url, token string) (status int, err error)
}

// Config configures a Broker. The zero value of a field means its default.
type Config struct {
	// Signaller reaches the devices; required.
	Signaller Signaller
	// URL is the base URL devices connect back to, ws:// or wss:// with
	// no path (e.g. wss://node1.example.com:8443). "" derives it from each
	// service request: ws:// (wss:// over TLS) and the request's Host.
	URL string
	// AcceptTimeout bounds the wait for the device's answer and its
	// connection back (504 past it). Default 30 s.
	AcceptTimeout time.Duration
	// TokenTTL is how long a connect-back token is valid. Default 10 s.
	TokenTTL time.Duration
	// IdleTimeout ends a stream that carried no byte either way for that
	// long. Default 5 min.
	IdleTimeout time.Duration
	// MaxPerDevice and MaxPerNode bound the streams open or opening, per
	// device and on this node. Defaults 8 and 256.
	MaxPerDevice int
	MaxPerNode   int
	// BytesPerSecond limits each direction of each stream; 0 is no limit.
	BytesPerSecond int
	// ChunkSize is the relay's buffer per direction. Default 32 KiB.
	ChunkSize int
	// Logger; nil is slog.Default(). Registerer for the metrics; nil
	// registers none.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults (without a Signaller).
func DefaultConfig() Config {
	return Config{AcceptTimeout: 30 * time.Second, TokenTTL: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		MaxPerDevice: 8, MaxPerNode: 256, ChunkSize: 32 << 10}
}

// validate fills zero values with defaults and rejects bad ones.
func (c *Config) validate() error {
	d := DefaultConfig()
	if c.Signaller == nil {
		return fmt.Errorf("streams: Config.Signaller is required")
	}
	if c.AcceptTimeout == 0 {
		c.AcceptTimeout = d.AcceptTimeout
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = d.TokenTTL
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxPerDevice == 0 {
		c.MaxPerDevice = d.MaxPerDevice
	}
	if c.MaxPerNode == 0 {
		c.MaxPerNode = d.MaxPerNode
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = d.ChunkSize
	}
	if c.AcceptTimeout < 0 || c.TokenTTL < 0 || c.IdleTimeout < 0 || c.MaxPerDevice < 0 || c.MaxPerNode < 0 ||
		c.BytesPerSecond < 0 || c.ChunkSize < 0 {
		return fmt.Errorf("streams: negative timeout, limit or size")
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("streams: URL %q: want ws://host:port or wss://host:port", c.URL)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// metrics of the Broker.
type metrics struct {
	streams *prometheus.CounterVec
	active  prometheus.Gauge
	bytes   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinmesh_streams_total",
			Help: "Device stream requests by result: opened, not_connected, refused, timeout, limit, bad_request, failed.",
		}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "twinmesh_streams_active", Help: "Device streams open on this node.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinmesh_stream_bytes_total", Help: "Bytes relayed by device streams, by direction (to_device, to_service).",
		}, []string{"direction"}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.active, m.bytes)
	}
	return m
}
