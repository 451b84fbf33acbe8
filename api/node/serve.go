package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/twinmesh/twinmesh/actors"
	_ "github.com/twinmesh/twinmesh/actors/kinds"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/authz"
	"github.com/twinmesh/twinmesh/api/dashboard"
	"github.com/twinmesh/twinmesh/api/ws"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
	amqpio "github.com/twinmesh/twinmesh/protocols/amqp"
	"github.com/twinmesh/twinmesh/protocols/coap"
	"github.com/twinmesh/twinmesh/protocols/devicerate"
	"github.com/twinmesh/twinmesh/protocols/mqtt"
	"github.com/twinmesh/twinmesh/protocols/sas"
	"github.com/twinmesh/twinmesh/protocols/streams"
)

func newLogger(c *serveConfig, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// prepareData makes sure the data folder exists and is writable.
func prepareData(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data folder %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("data folder %s is not writable: %w", dir, err)
	}
	name := probe.Name()
	_ = probe.Close()
	return os.Remove(name)
}

// adminToken returns the configured token, or the one kept in
// <data>/admin.token, generating it (mode 0600) on first start.
func adminToken(c *serveConfig) (string, bool, error) {
	if c.APIToken != "" {
		return c.APIToken, false, nil
	}
	path := filepath.Join(c.Data, "admin.token")
	if b, err := os.ReadFile(path); err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", false, err
	}
	tok := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	return tok, true, nil
}

// node is everything `serve` runs, in start order; stop runs in reverse.
type node struct {
	log   *slog.Logger
	db    *persistence.DB
	prov  *tmcluster.Provider
	place *tmcluster.Placement
	sys   *actors.System
	http  *http.Server
	httpL net.Listener
	// httpsL serves the IoT Hub service API (--https); nil without it.
	httpsL net.Listener
	mqtt   *mqtt.Server // nil when MQTT is off
	coap   *coap.Server // nil when CoAP is off
	stops  []func(context.Context)
	// retiring is set when the node stops to come back under a new
	// identity: its grains were taken over while it was cut off, so there
	// is nothing to hand off and no client to wait for.
	retiring bool
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c serveConfig
	fs := serveFlags(&c, stderr)
	if err := parseLayered(fs, args, &c.Config); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	log, err := newLogger(&c, stderr)
	if err != nil {
		return err
	}
	if c.soloGossip(fs) {
		log.Info("no --join or --gossip: gossip on a free port; give --gossip ADDR for a node that others --join")
	}
	seeds := c.Join // the configured seeds, tried again at every restart
	restarting := false
	for {
		n, err := startNode(ctx, &c, log)
		if err != nil {
			if n != nil {
				n.stop()
			}
			if !restarting {
				return err
			}
			// A restart under a new identity must not end the process:
			// the members it knew may be unreachable for a while.
			log.Warn("restart under a new identity failed; trying again", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
			}
			continue
		}
		restarting = false
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			n.stop()
			log.Info("stopped")
			return nil
		case <-n.prov.Retired():
			// The cluster declared this node dead while it was cut off or
			// paused, and will not readmit its identity: come back as a new
			// incarnation on the same addresses, joining the members it
			// knows.
			n.keepAddresses(&c, seeds)
			n.retiring = true
			n.stop()
			restarting = true
			log.Warn("restarting under a new identity", "join", c.Join)
		}
	}
}

// keepAddresses makes c start the next incarnation of the node where this
// one listens (ports chosen by the system included), joining the members
// this one sees alive and the configured seeds.
func (n *node) keepAddresses(c *serveConfig, configured string) {
	c.HTTP = n.httpL.Addr().String()
	if n.httpsL != nil {
		c.HTTPS = n.httpsL.Addr().String()
	}
	if n.mqtt != nil {
		if c.MQTT != "" {
			c.MQTT = n.mqtt.Addr()
		}
		if c.MQTTS != "" {
			c.MQTTS = n.mqtt.TLSAddr()
		}
	}
	n.keepCoAP(c)
	c.Gossip = n.prov.GossipAddr()
	c.Remote = n.sys.RemoteAddr()
	var seeds []string
	for _, m := range n.prov.Members() {
		if !m.Self && m.State != tmcluster.StateLeft && m.State != tmcluster.StateDead {
			seeds = append(seeds, m.Gossip)
		}
	}
	if configured != "" {
		seeds = append(seeds, configured)
	}
	c.Join = strings.Join(seeds, ",")
}

func startNode(ctx context.Context, c *serveConfig, log *slog.Logger) (*node, error) {
	n := &node{log: log}
	started := time.Now() // no session of this process began before it
	if err := prepareData(c.Data); err != nil {
		return nil, err
	}
	token, generated, err := adminToken(c)
	if err != nil {
		return nil, err
	}
	if generated {
		log.Info("generated admin token", "file", filepath.Join(c.Data, "admin.token"))
	}
	var gossipKey []byte
	if c.GossipKey != "" {
		if gossipKey, err = base64.StdEncoding.DecodeString(c.GossipKey); err != nil {
			return nil, fmt.Errorf("%w: --gossip-key is not base64: %v", errUsage, err)
		}
	}
	reg := prometheus.NewRegistry()
	// Beside the memstats: the heap marked live at the last collection
	// (go_gc_heap_live_bytes) is what memory per device is measured with;
	// the in-use heap also holds garbage not yet collected.
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	commitSize := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "twinmesh_commit_batch_requests", Help: "Requests group-committed per bbolt transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12),
	})
	commitLatency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "twinmesh_commit_seconds", Help: "Duration of one group-commit transaction including fsync.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
	})
	reg.MustRegister(commitSize, commitLatency)

	dbPath := filepath.Join(c.Data, "twinmesh.db")
	if st, err := os.Stat(dbPath); err == nil && st.Size() > 0 {
		// bbolt panics on some damaged files (rebuilding the freelist, on
		// a goroutine of its own, where nothing can recover): the file is
		// opened in a child process first, whose crash only reports the
		// damage. It costs one more read of the file's pages at start.
		if err := probeStore(ctx, dbPath, false); err != nil {
			return nil, err
		}
	}
	n.db, err = persistence.Open(dbPath, &persistence.Options{
		MaxBatch: c.CommitMaxBatch, MaxWait: c.CommitMaxWait, Logger: log.With("component", "persistence"),
		Observer: func(requests, _ int, d time.Duration) {
			commitSize.Observe(float64(requests))
			commitLatency.Observe(d.Seconds())
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	n.stops = append(n.stops, func(context.Context) {
		if err := n.db.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	})

	n.prov, err = tmcluster.NewProvider(tmcluster.Config{
		NodeName: c.NodeName, GossipAddr: c.Gossip, Join: c.joinList(), GossipKey: gossipKey,
		Logger: slog.New(stoppingHandler{log.Handler()}),
	})
	if err != nil {
		return n, fmt.Errorf("%w: cluster: %v", errUsage, err)
	}
	n.place, err = tmcluster.NewPlacement(tmcluster.PlacementConfig{
		Store: n.db, Replicas: c.Replicas, Joining: len(c.joinList()) > 0,
		Membership: n.prov,
		Logger:     log, Registerer: reg,
	})
	if err != nil {
		return n, fmt.Errorf("%w: %v", errUsage, err)
	}
	remoteTLS, err := clusterTLS(c)
	if err != nil {
		return n, err
	}
	n.sys, err = actors.New(actors.Config{
		RemoteTLS: remoteTLS,
		NodeName:  c.NodeName, RemoteAddr: c.Remote, Provider: n.prov, Store: n.db,
		IdentityLookup: n.place, Replication: n.place,
		IdleTimeout: c.IdleTimeout, Limits: twin.Limits{MaxSectionBytes: c.MaxSectionBytes, MaxDepth: c.MaxDepth,
			MaxPoints: c.MaxPoints, MaxPointsPerMessage: c.MaxPointsPerMsg, MaxPointName: c.MaxPointName},
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return n, err
	}
	// AMQP 1.0 routes out and ingress in (CONTRACT section 8): grains
	// match their events against the routes and write what they route to
	// their outbox in the same commit; the endpoints' workers send the
	// outboxes of the grains this member owns. Its store closes after the
	// actor system stopped.
	amqpSvc, err := amqpio.New(amqpio.Config{Path: filepath.Join(c.Data, "amqp.db"), Backend: n.sys,
		Grains: amqpGrains{db: n.db, sys: n.sys, place: n.place}, Definitions: amqpDefs{n.sys}, Members: n.place,
		Bounds:   amqpio.Bounds{MaxCount: c.AMQPOutboxMessages, MaxBytes: c.AMQPOutboxBytes, MaxAge: c.AMQPOutboxAge},
		MaxTries: c.AMQPMaxTries, Credit: c.AMQPCredit, MaxMessageBytes: c.AMQPMaxMessage, BackoffMax: c.AMQPBackoffMax,
		KeepPayloads: n.sys.KeepTelemetryPayloads,
		Tags:         func(id string) (map[string]any, error) { return storedTags(n.db, id) },
		Logger:       log.With("component", "amqp"), Registerer: reg})
	if err != nil {
		return n, err
	}
	n.place.HandleQuery(amqpio.DeadLettersQuery, amqpSvc.AnswerDeadLetters)
	n.stops = append(n.stops, func(context.Context) {
		if err := amqpSvc.Close(); err != nil {
			log.Error("close amqp store", "err", err)
		}
	})
	n.sys.OnEvent(amqpSvc.HandleEvent) // the tags cache
	n.sys.SetRouter(amqpSvc)
	// The device sessions of this node: the MQTT adapter (listening once
	// the catalog is synced), or none.
	var ms *mqtt.Server
	var sessions actors.Commander = noSessions{}
	var streamSessions actors.StreamSignaller = noSessions{}
	rate := devicerate.New(c.DeviceRate, c.DeviceBurst) // one bucket per device, all protocols
	if c.MQTT != "" || c.MQTTS != "" {
		ms, err = mqtt.New(mqtt.Config{
			Addr: c.MQTT, TLSAddr: c.MQTTS, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
			MaxConnections: c.MaxConnections, Rate: rate, MaxPayload: c.MaxPayload,
			ConnectTimeout: c.MQTTConnectTimeout, MaxTokenLifetime: c.MaxTokenLifetime,
			Logger: log, Registerer: reg,
		}, mqttBackend{n.sys})
		if err != nil {
			return n, fmt.Errorf("%w: %v", errUsage, err)
		}
		sessions, streamSessions, n.mqtt = ms, ms, ms
	}
	cs, err := newCoAP(c, n.sys, log, reg, rate)
	if err != nil {
		return n, err
	}
	router := n.sys.RouteMethods(sessions)
	// Rule actions run on workers the node owns, with the method router.
	n.spawn(func(ctx context.Context) { n.sys.RunActions(ctx, router) })
	var origins []string
	for _, o := range strings.Split(c.WSOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	// One authorization layer for REST and the WebSocket hub; a token
	// revoked here or on another member closes its WebSockets at once.
	guard := authz.New(authz.Config{AdminToken: token, Tokens: n.sys, Tree: n.sys})
	hub := ws.NewHub(ws.Config{Logger: log, Authz: guard, AllowedOrigins: origins,
		InterestChanged: n.place.InterestChanged}, wsBackend{sys: n.sys, methods: router})
	// Telemetry and rollup events of grains on other members come here
	// only while a WebSocket subscription takes them.
	n.place.SetEventInterest(hub.Wants)
	n.sys.OnEvent(wsSink(hub))
	n.sys.OnTokensChanged(hub.Revalidate)
	// Device streams: closed when their device is disabled or deleted, or
	// their caller's token revoked.
	streamBroker, err := newStreamBroker(c, n.sys.RouteStreams(streamSessions), log, reg)
	if err != nil {
		return n, err
	}
	n.sys.OnEvent(streamBroker.HandleEvent)
	n.sys.OnTokensChanged(streamBroker.Revalidate)
	n.stops = append(n.stops, func(context.Context) { hub.Close() })
	if ms != nil {
		n.sys.OnEvent(ms.HandleEvent)
	}
	// What other members send this node, until the actor system stopped.
	n.spawn(func(ctx context.Context) { _ = n.place.Serve(ctx, local{n.sys, sessions, streamSessions}) })
	if err := n.sys.Start(ctx); err != nil {
		return n, err
	}
	n.stops = append(n.stops, func(context.Context) {
		if n.retiring {
			n.sys.StopRetired()
		} else {
			n.sys.Stop(true)
		}
	})
	n.spawn(func(ctx context.Context) { n.db.Retain(ctx, persistence.Retention{Telemetry: c.TelemetryRetention}) })
	// Endpoint workers and ingress consumers: stopped before the actor
	// system, so an ingress never stores into a stopping system.
	n.spawn(func(ctx context.Context) { amqpSvc.Start(ctx); <-ctx.Done(); amqpSvc.Wait() })
	log.Info("listening", "listener", "gossip", "addr", n.prov.GossipAddr())
	log.Info("listening", "listener", "remote", "addr", n.sys.RemoteAddr())

	if c.joinList() != nil {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := n.place.WaitSynced(sctx)
		cancel()
		if err != nil {
			return n, err
		}
	}
	if ms != nil {
		if err := ms.Start(ctx); err != nil {
			return n, err
		}
		n.stops = append(n.stops, func(context.Context) { _ = ms.Close() })
		if ms.Addr() != "" {
			log.Info("listening", "listener", "mqtt", "addr", ms.Addr())
		}
		if ms.TLSAddr() != "" {
			log.Info("listening", "listener", "mqtts", "addr", ms.TLSAddr())
		}
	}
	if err := n.startCoAP(ctx, cs); err != nil {
		return n, err
	}

	apiSrv, err := api.New(api.Config{
		Methods: api.Methods(router),
		Streams: streamBroker,
		Token:   token, Authz: guard, MaxTokenLifetime: c.MaxTokenLifetime,
		System: n.sys, Logger: log, Registerer: reg, Gatherer: reg,
		SignToken: func(id, key string, ttl time.Duration) (string, time.Time, error) {
			exp := time.Now().Add(ttl)
			tok, err := sas.Sign(c.HubHost+"/devices/"+id, key, exp)
			return tok, exp, err
		},
		Cluster:      func() any { return n.place.View(context.Background()) },
		OwnsJob:      func(id string) bool { return n.place.Owns("job/" + id) },
		Backup:       n.db.Backup,
		ForgetMember: n.place.Forget,
		Ready: func() error {
			if !n.sys.Ready() {
				return errors.New("actor system not ready")
			}
			if n.mqtt != nil {
				return n.mqtt.Serving() // a listener that cannot accept
			}
			return nil
		},
		Extra: func(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
			mux.Handle("GET /api/v1/ws", hub)
			mux.Handle("GET "+streams.ConnectPath+"{id}", streamConnectBack(streamBroker))
			amqpSvc.Mount(mux, auth)
			mux.Handle("/", dashboard.Handler()) // "/api/" stays more specific
			if c.Pprof {
				mux.Handle("/debug/pprof/", auth(http.HandlerFunc(pprof.Index)))
				mux.Handle("/debug/pprof/profile", auth(http.HandlerFunc(pprof.Profile)))
				mux.Handle("/debug/pprof/trace", auth(http.HandlerFunc(pprof.Trace)))
			}
		},
	})
	if err != nil {
		return n, err
	}
	n.httpL, err = net.Listen("tcp", c.HTTP)
	if err != nil {
		return n, fmt.Errorf("http listener: %w", err)
	}
	// Idle keep-alive connections are closed after a minute: clients that
	// hold sockets without sending requests do not pile up.
	n.http = &http.Server{Handler: apiSrv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := n.http.Serve(n.httpL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	n.stops = append(n.stops, func(ctx context.Context) { _ = n.http.Shutdown(ctx) })
	// Streams are hijacked connections, which Shutdown does not wait for:
	// they end first.
	n.stops = append(n.stops, func(context.Context) { streamBroker.Close() })
	log.Info("listening", "listener", "http", "addr", n.httpL.Addr().String())
	if err := n.startIoTHub(c, apiSrv, router); err != nil {
		return n, err
	}
	if err := writeNodeInfo(c.Data, n.httpL.Addr().String()); err != nil {
		log.Warn("write node.json", "err", err)
	}
	n.stops = append(n.stops, func(context.Context) { _ = os.Remove(filepath.Join(c.Data, "node.json")) })

	touched, err := n.sys.Touch(ctx)
	if err != nil {
		log.Warn("rollup repair at start", "err", err)
	} else {
		log.Info("rollups checked", "aggregates", touched)
	}
	// Sessions this node held before it stopped without saying so (a
	// crash) are gone: their devices are marked disconnected.
	n.spawn(func(ctx context.Context) {
		swept, err := n.sys.SweepSessions(ctx, c.NodeName, started)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("sessions of the previous run", "err", err, "disconnected", swept)
		case swept > 0:
			log.Info("devices connected before the restart marked disconnected", "devices", swept)
		}
	})
	// And those of members that crashed, once memberlist declares them dead.
	n.spawn(func(ctx context.Context) { sweepDeadMembers(ctx, log, n.prov.Members, n.place.Known, n.sys) })
	// Fleet jobs this member owns, started or resumed (after a restart, or
	// from a member that died).
	n.spawn(apiSrv.RunJobs)
	log.Info("node ready", "node", c.NodeName, "data", c.Data)
	return n, nil
}

// spawn runs f on a goroutine of the node's until the node stops: at
// shutdown f's context is cancelled, where spawn was called in start order
// (reverse), and stop waits for f to return.
func (n *node) spawn(f func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	n.stops = append(n.stops, func(context.Context) { cancel(); <-done })
}

// stop shuts everything down in reverse start order.
func (n *node) stop() {
	within := 15 * time.Second
	if n.retiring {
		within = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for i := len(n.stops) - 1; i >= 0; i-- {
		n.stops[i](ctx)
	}
}
