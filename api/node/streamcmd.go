package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/twinmesh/twinmesh/protocols/streams/streamclient"
)

const streamUsage = `usage: twinmesh stream <proxy|agent> [flags]

  proxy   service side: forward a local TCP port through device streams
  agent   device side: answer stream requests over MQTT, to the targets --allow names

Run 'twinmesh stream <proxy|agent> -h' for the flags.
`

// streamCmd runs `twinmesh stream proxy|agent` (CONTRACT section 11).
func streamCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, streamUsage)
		return fmt.Errorf("%w: proxy or agent?", errUsage)
	}
	switch args[0] {
	case "proxy":
		return streamProxy(ctx, args[1:], stderr)
	case "agent":
		return streamAgent(ctx, args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, streamUsage)
		return nil
	}
	return fmt.Errorf("%w: unknown stream command %q (proxy or agent)", errUsage, args[0])
}

func streamProxy(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("stream proxy", "stream proxy --node URL --token T --device D --name N --listen 127.0.0.1:2222",
		"Listens on --listen and forwards every connection it accepts through a stream of its own\n"+
			"to the device's --name (the device's agent maps the name to a target it allows).", stderr)
	node := fs.String("node", "http://127.0.0.1:8080", "the node's URL (http, https, ws or wss)")
	token := fs.String("token", os.Getenv("TWINMESH_TOKEN"), "admin token, or operator token whose scope covers the device (default $TWINMESH_TOKEN)")
	device := fs.String("device", "", "device ID")
	name := fs.String("name", "", "stream name, e.g. ssh")
	listen := fs.String("listen", "127.0.0.1:2222", "local address to listen on")
	ca := fs.String("ca", "", "PEM CA certificate(s) to trust for an https/wss node (default: the system's)")
	if err := parseCommand(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *device == "" || *name == "" || *token == "" {
		return fmt.Errorf("%w: --device, --name and --token are required", errUsage)
	}
	tc, err := caConfig(*ca)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("listening", "listener", "proxy", "addr", l.Addr().String(), "device", *device, "name", *name)
	p := &streamclient.Proxy{Dialer: &streamclient.Dialer{Node: *node, Token: *token, TLS: tc},
		Device: *device, Name: *name, Logger: log}
	return p.Serve(ctx, l)
}

func streamAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("stream agent", "stream agent --mqtt HOST:PORT --device D --key K --allow N=127.0.0.1:22[,…]",
		"Connects the device over MQTT and answers stream requests: a name in --allow is joined\n"+
			"to its target; any other name is refused (403). Nothing else is ever dialled.", stderr)
	broker := fs.String("mqtt", "127.0.0.1:1883", "the node's MQTT address: host:port, or tcp://, ssl:// or tls:// URL")
	device := fs.String("device", "", "device ID")
	key := fs.String("key", os.Getenv("TWINMESH_DEVICE_KEY"), "the device's SAS key (default $TWINMESH_DEVICE_KEY)")
	allow := fs.String("allow", "", "stream names and their targets: name=host:port[,name=host:port…]")
	hub := fs.String("hub-host", "", "host in the SAS token's resource (default: the --mqtt host)")
	ca := fs.String("ca", "", "PEM CA certificate(s) to trust for ssl:// MQTT and wss:// streams (default: the system's)")
	maxStreams := fs.Int("max-streams", 16, "most streams open at once")
	if err := parseCommand(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *device == "" || *key == "" {
		return fmt.Errorf("%w: --device and --key are required", errUsage)
	}
	targets, err := streamclient.ParseTargets(*allow)
	if err != nil {
		return fmt.Errorf("%w: --%v", errUsage, err)
	}
	tc, err := caConfig(*ca)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	a := &streamclient.Agent{Targets: targets, MaxStreams: *maxStreams, TLS: tc, Logger: log}
	return streamclient.RunMQTT(ctx, streamclient.MQTTConfig{Broker: *broker, DeviceID: *device, Key: *key,
		HubHost: *hub, TLS: tc, Logger: log}, a)
}

// caConfig trusts the certificates of a PEM file; "" is the system's roots.
func caConfig(path string) (*tls.Config, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --ca: %v", errUsage, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: --ca %s holds no PEM certificate", errUsage, path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
