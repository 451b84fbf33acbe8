package node

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/twinmesh/twinmesh/protocols/coap"
)

// serveConfig is every setting of `twinmesh serve`. Each field is a flag
// (--name), an environment variable (TWINMESH_NAME) and a YAML key (name);
// the flag wins over the variable, which wins over the file.
type serveConfig struct {
	Config             string
	Data               string
	HTTP               string
	MQTT               string
	MQTTS              string
	HTTPS              string
	COAP               string
	COAPS              string
	COAPInsecure       bool
	COAPPresenceWindow time.Duration
	TLSCert            string
	TLSKey             string
	NodeName           string
	Gossip             string
	Remote             string
	Join               string
	GossipKey          string
	Replicas           int
	ClusterTLSCert     string
	ClusterTLSKey      string
	ClusterTLSCA       string
	APIToken           string
	HubHost            string
	IdleTimeout        time.Duration
	MaxSectionBytes    int
	MaxDepth           int
	CommitMaxBatch     int
	CommitMaxWait      time.Duration
	TelemetryRetention time.Duration
	MaxConnections     int
	MaxPoints          int
	MaxPointsPerMsg    int
	MaxPointName       int
	MQTTConnectTimeout time.Duration
	MaxTokenLifetime   time.Duration
	WSOrigins          string
	DeviceRate         float64
	DeviceBurst        int
	MaxPayload         int
	// AMQP routes and ingress (CONTRACT section 8).
	AMQPOutboxMessages int
	AMQPOutboxBytes    int
	AMQPOutboxAge      time.Duration
	AMQPMaxTries       int
	AMQPCredit         int
	AMQPMaxMessage     int
	AMQPBackoffMax     time.Duration
	LogLevel           string
	LogFormat          string
	Pprof              bool
	// Device streams (CONTRACT section 11).
	StreamURL           string
	StreamAcceptTimeout time.Duration
	StreamTokenTTL      time.Duration
	StreamIdleTimeout   time.Duration
	StreamMaxPerDevice  int
	StreamMax           int
	StreamRate          int
}

func serveFlags(c *serveConfig, out io.Writer) *flag.FlagSet {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	fs := newFlagSet("serve", "serve [flags]", "Runs a node. Every flag is also an environment variable TWINMESH_<FLAG> and a key of the --config file.", out)
	fs.StringVar(&c.Config, "config", "", "optional YAML config file (keys are the flag names)")
	fs.StringVar(&c.Data, "data", "./data", "folder for the bbolt file and generated secrets")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8080", "REST, WebSocket, dashboard, /metrics, /healthz, /readyz")
	fs.StringVar(&c.MQTT, "mqtt", "127.0.0.1:1883", "MQTT listener (plain); empty disables")
	fs.StringVar(&c.MQTTS, "mqtts", "", "MQTT over TLS listener; needs --tls-cert and --tls-key")
	fs.StringVar(&c.COAP, "coap", "127.0.0.1:5683", "CoAP listener (UDP, SAS token in the sas query); empty disables; off loopback needs --coap-insecure")
	fs.StringVar(&c.COAPS, "coaps", "", "CoAP over DTLS listener with pre-shared keys (identity: device ID, key: its primary or secondary key)")
	fs.BoolVar(&c.COAPInsecure, "coap-insecure", false, "allow --coap off loopback, where SAS tokens travel in clear")
	fs.DurationVar(&c.COAPPresenceWindow, "coap-presence-window", 5*time.Minute, "a CoAP device that sent a request within it shows as connected")
	fs.StringVar(&c.HTTPS, "https", "", "IoT Hub service API over TLS (CONTRACT section 9); needs --tls-cert and --tls-key")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate for --mqtts and --https")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for --mqtts and --https")
	fs.StringVar(&c.NodeName, "node-name", host, "member name in the cluster")
	fs.StringVar(&c.Gossip, "gossip", defaultGossip, "memberlist bind address; without --gossip and --join, a free port")
	fs.StringVar(&c.Remote, "remote", "127.0.0.1:0", "protoactor remote bind address")
	fs.StringVar(&c.Join, "join", "", "comma-separated gossip addresses of existing members")
	fs.StringVar(&c.GossipKey, "gossip-key", "", "base64 AES key (16, 24 or 32 bytes) that encrypts gossip")
	fs.StringVar(&c.ClusterTLSCert, "cluster-tls-cert", "", "PEM certificate of this node for TLS between nodes (with --cluster-tls-key and --cluster-tls-ca)")
	fs.StringVar(&c.ClusterTLSKey, "cluster-tls-key", "", "PEM private key for --cluster-tls-cert")
	fs.StringVar(&c.ClusterTLSCA, "cluster-tls-ca", "", "PEM CA certificate(s) that node certificates must be signed by")
	fs.IntVar(&c.Replicas, "replicas", 2, "nodes that hold every acknowledged change, this one included (capped by cluster size)")
	fs.StringVar(&c.APIToken, "api-token", "", "admin bearer token; generated into <data>/admin.token when empty")
	fs.StringVar(&c.HubHost, "hub-host", "twinmesh.local", "host name put in the sr of SAS tokens this node mints")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 10*time.Minute, "grains passivate after this long without messages")
	fs.IntVar(&c.MaxSectionBytes, "max-section-bytes", 32<<10, "largest twin section (desired, reported, tags) in bytes")
	fs.IntVar(&c.MaxDepth, "max-depth", 10, "deepest nesting of a twin section")
	fs.IntVar(&c.CommitMaxBatch, "commit-max-batch", 1000, "most requests group-committed in one transaction")
	fs.DurationVar(&c.CommitMaxWait, "commit-max-wait", 2*time.Millisecond, "longest a write waits for others to share its commit")
	fs.DurationVar(&c.TelemetryRetention, "telemetry-retention", 7*24*time.Hour, "how long the warm store keeps telemetry")
	fs.IntVar(&c.MaxConnections, "max-connections", 10000, "most concurrent MQTT connections")
	fs.DurationVar(&c.MQTTConnectTimeout, "mqtt-connect-timeout", 10*time.Second, "how long a new MQTT connection may take to send CONNECT before it is closed")
	fs.StringVar(&c.WSOrigins, "ws-origins", "", "comma-separated browser origins (https://host[:port]) whose pages may open the WebSocket API besides the node's own; * allows any")
	fs.DurationVar(&c.MaxTokenLifetime, "max-token-lifetime", 366*24*time.Hour, "SAS tokens, and API access tokens (POST /api/v1/tokens), that expire further ahead are refused")
	fs.Float64Var(&c.DeviceRate, "device-rate", 100, "messages per second a device may publish (token bucket)")
	fs.IntVar(&c.DeviceBurst, "device-burst", 200, "burst size of the per-device rate limit")
	fs.IntVar(&c.MaxPayload, "max-payload", 256<<10, "largest MQTT payload in bytes")
	fs.IntVar(&c.AMQPOutboxMessages, "amqp-outbox-messages", 100_000, "most messages waiting in one AMQP endpoint's outbox; more are dropped and counted")
	fs.IntVar(&c.AMQPOutboxBytes, "amqp-outbox-bytes", 64<<20, "most bytes waiting in one AMQP endpoint's outbox")
	fs.DurationVar(&c.AMQPOutboxAge, "amqp-outbox-age", 0, "AMQP outbox messages older than this are dropped unsent and counted; 0 keeps them")
	fs.IntVar(&c.AMQPMaxTries, "amqp-max-tries", 5, "a message an AMQP broker rejects this many times goes to the endpoint's dead letters")
	fs.IntVar(&c.AMQPCredit, "amqp-credit", 32, "AMQP ingress messages in flight per ingress (link credit)")
	fs.IntVar(&c.AMQPMaxMessage, "amqp-max-message", 256<<10, "largest AMQP ingress message body in bytes")
	fs.DurationVar(&c.AMQPBackoffMax, "amqp-backoff-max", 30*time.Second, "longest wait between an AMQP endpoint's retries (the first waits 200ms, then each doubles, with jitter)")
	fs.IntVar(&c.MaxPoints, "max-points", 64, "most telemetry point names per device")
	fs.IntVar(&c.MaxPointsPerMsg, "max-points-per-message", 64, "most telemetry points in one message")
	fs.IntVar(&c.MaxPointName, "max-point-name", 64, "longest telemetry point name, in bytes")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ (admin token required)")
	fs.StringVar(&c.StreamURL, "stream-url", "", "ws:// or wss:// base URL devices connect back to for streams; empty: the Host the service used")
	fs.DurationVar(&c.StreamAcceptTimeout, "stream-accept-timeout", 30*time.Second, "how long a device has to accept a stream and connect back (504 past it)")
	fs.DurationVar(&c.StreamTokenTTL, "stream-token-ttl", 10*time.Second, "lifetime of a stream's one-time connect-back token")
	fs.DurationVar(&c.StreamIdleTimeout, "stream-idle-timeout", 5*time.Minute, "a stream that carried no byte either way for this long is closed")
	fs.IntVar(&c.StreamMaxPerDevice, "stream-max-per-device", 8, "most streams open or opening to one device through this node")
	fs.IntVar(&c.StreamMax, "stream-max", 256, "most streams open or opening on this node")
	fs.IntVar(&c.StreamRate, "stream-rate", 0, "bytes per second each direction of a stream may carry; 0 is no limit")
	return fs
}

// envName is the environment variable of a flag: TWINMESH_<FLAG>.
func envName(flagName string) string {
	return "TWINMESH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseLayered parses args, then fills every flag not given on the command
// line from its environment variable, then from the YAML file.
func parseLayered(fs *flag.FlagSet, args []string, configFlag *string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var setErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || setErr != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				setErr = fmt.Errorf("%w: %s=%q: %s", errUsage, envName(f.Name), v, badValue(f, err))
			}
			set[f.Name] = true
		}
	})
	if setErr != nil {
		return setErr
	}
	if configFlag == nil || *configFlag == "" {
		return nil
	}
	raw, err := os.ReadFile(*configFlag)
	if err != nil {
		return fmt.Errorf("%w: config file: %v", errUsage, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%w: config file %s: %v", errUsage, *configFlag, err)
	}
	for k, v := range doc {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("%w: config file %s: unknown key %q", errUsage, *configFlag, k)
		}
		if set[k] {
			continue
		}
		var s string
		switch x := v.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		case nil:
			s = ""
		default:
			s = fmt.Sprint(x)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("%w: config file %s: %s: %q: %s", errUsage, *configFlag, k, s, badValue(f, err))
		}
	}
	return nil
}

// badValue says what a flag expects, for a value from the environment or
// the config file that it refused (the flag package says only "parse
// error").
func badValue(f *flag.Flag, err error) string {
	var want string
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case int, int64, uint, uint64:
			want = "an integer"
		case float64:
			want = "a number"
		case time.Duration:
			want = "a duration such as 30s, 5m or 1h30m"
		case bool:
			want = "true or false"
		}
	}
	if want == "" {
		return err.Error()
	}
	return fmt.Sprintf("--%s must be %s", f.Name, want)
}

// Accepted ranges of the numeric and duration flags: a value outside is a
// usage error naming the range (a negative retention once deleted all
// telemetry at once, and a negative --max-payload silently meant the
// default).
func (c *serveConfig) checkRanges() error {
	ints := []struct {
		flag     string
		v        int
		min, max int
	}{
		{"replicas", c.Replicas, 1, 16},
		{"max-section-bytes", c.MaxSectionBytes, 64, 16 << 20},
		{"max-depth", c.MaxDepth, 1, 100},
		{"commit-max-batch", c.CommitMaxBatch, 1, 100000},
		{"max-connections", c.MaxConnections, 1, 10_000_000},
		{"device-burst", c.DeviceBurst, 1, 1_000_000_000},
		{"max-payload", c.MaxPayload, 1, 64 << 20},
		{"max-points", c.MaxPoints, 1, 100000},
		{"amqp-outbox-messages", c.AMQPOutboxMessages, 1, 100_000_000},
		{"amqp-outbox-bytes", c.AMQPOutboxBytes, 1 << 10, 1 << 40},
		{"amqp-max-tries", c.AMQPMaxTries, 1, 1000},
		{"amqp-credit", c.AMQPCredit, 1, 10000},
		{"amqp-max-message", c.AMQPMaxMessage, 1, 64 << 20},
		{"max-points-per-message", c.MaxPointsPerMsg, 1, 100000},
		{"max-point-name", c.MaxPointName, 1, 4096},
		{"stream-max-per-device", c.StreamMaxPerDevice, 1, 100000},
		{"stream-max", c.StreamMax, 1, 1_000_000},
		{"stream-rate", c.StreamRate, 0, 1 << 40},
	}
	for _, f := range ints {
		if f.v < f.min || f.v > f.max {
			return fmt.Errorf("%w: --%s is %d; it must be between %d and %d", errUsage, f.flag, f.v, f.min, f.max)
		}
	}
	durs := []struct {
		flag     string
		v        time.Duration
		min, max time.Duration
	}{
		{"idle-timeout", c.IdleTimeout, time.Second, 30 * 24 * time.Hour},
		{"commit-max-wait", c.CommitMaxWait, 0, time.Second},
		{"telemetry-retention", c.TelemetryRetention, time.Minute, 100 * 365 * 24 * time.Hour},
		{"mqtt-connect-timeout", c.MQTTConnectTimeout, 100 * time.Millisecond, 5 * time.Minute},
		{"stream-accept-timeout", c.StreamAcceptTimeout, 100 * time.Millisecond, 5 * time.Minute},
		{"stream-token-ttl", c.StreamTokenTTL, 100 * time.Millisecond, 5 * time.Minute},
		{"stream-idle-timeout", c.StreamIdleTimeout, time.Second, 7 * 24 * time.Hour},
		{"max-token-lifetime", c.MaxTokenLifetime, time.Minute, 100 * 365 * 24 * time.Hour},
		{"coap-presence-window", c.COAPPresenceWindow, time.Second, 24 * time.Hour},
		{"amqp-outbox-age", c.AMQPOutboxAge, 0, 100 * 365 * 24 * time.Hour},
		{"amqp-backoff-max", c.AMQPBackoffMax, 200 * time.Millisecond, 24 * time.Hour},
	}
	for _, f := range durs {
		if f.v < f.min || f.v > f.max {
			return fmt.Errorf("%w: --%s is %v; it must be between %v and %v", errUsage, f.flag, f.v, f.min, f.max)
		}
	}
	if !(c.DeviceRate > 0 && c.DeviceRate <= 1e9) { // NaN fails too
		return fmt.Errorf("%w: --device-rate is %v; it must be above 0 and at most 1e9", errUsage, c.DeviceRate)
	}
	return nil
}

func (c *serveConfig) validate() error {
	if err := c.checkRanges(); err != nil {
		return err
	}
	if c.Data == "" {
		return fmt.Errorf("%w: --data must not be empty", errUsage)
	}
	if c.HTTP == "" {
		return fmt.Errorf("%w: --http must not be empty", errUsage)
	}
	if c.MQTTS != "" && (c.TLSCert == "" || c.TLSKey == "") {
		return fmt.Errorf("%w: --mqtts needs --tls-cert and --tls-key", errUsage)
	}
	if c.HTTPS != "" && (c.TLSCert == "" || c.TLSKey == "") {
		return fmt.Errorf("%w: --https needs --tls-cert and --tls-key", errUsage)
	}
	if err := coap.CheckAddr(c.COAP, c.COAPInsecure); err != nil {
		return fmt.Errorf("%w: --coap: %v", errUsage, err)
	}
	if c.NodeName == "" {
		return fmt.Errorf("%w: --node-name must not be empty", errUsage)
	}
	if c.MaxSectionBytes < 64 || c.MaxDepth < 1 {
		return fmt.Errorf("%w: --max-section-bytes must be >= 64 and --max-depth >= 1", errUsage)
	}
	if c.IdleTimeout < time.Second {
		return fmt.Errorf("%w: --idle-timeout must be at least 1s", errUsage)
	}
	if n := btoi(c.ClusterTLSCert != "") + btoi(c.ClusterTLSKey != "") + btoi(c.ClusterTLSCA != ""); n != 0 && n != 3 {
		return fmt.Errorf("%w: --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together", errUsage)
	}
	if c.Replicas < 1 {
		return fmt.Errorf("%w: --replicas must be at least 1", errUsage)
	}
	if c.CommitMaxBatch < 1 || c.CommitMaxWait < 0 {
		return fmt.Errorf("%w: --commit-max-batch must be >= 1 and --commit-max-wait >= 0", errUsage)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("%w: --log-format must be text or json", errUsage)
	}
	return nil
}

// defaultGossip is --gossip's default, the port other nodes --join.
const defaultGossip = "127.0.0.1:7946"

// soloGossip lets a node that was given neither --join nor --gossip (flag,
// variable or config key) gossip on a free port instead of the default
// 7946: a node alone needs no fixed gossip port, so a second node on the
// same host does not fail on it. It reports whether it did so.
func (c *serveConfig) soloGossip(fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "gossip" })
	if given || len(c.joinList()) > 0 || c.Gossip != defaultGossip {
		return false
	}
	c.Gossip = "127.0.0.1:0"
	return true
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *serveConfig) joinList() []string {
	var out []string
	for _, s := range strings.Split(c.Join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
