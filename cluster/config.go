package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profiles name memberlist's default configurations.
const (
	// ProfileLAN is memberlist.DefaultLANConfig: for nodes on one network.
	ProfileLAN = "lan"
	// ProfileLocal is memberlist.DefaultLocalConfig: shorter probe timeout
	// and suspicion, for nodes on one host (tests, examples).
	ProfileLocal = "local"
)

// Config configures a Provider. The zero value is usable: validation fills
// NodeName with the host name, GossipAddr with DefaultGossipAddr, Profile
// with ProfileLAN, Logger with slog.Default() and LeaveTimeout with 5 s.
type Config struct {
	// NodeName names the node, unique within the cluster; a restarted node
	// reuses it. Each incarnation gossips as its own memberlist node named
	// NodeName/actor-system ID (see the package documentation).
	NodeName string
	// GossipAddr is the "ip:port" memberlist binds (TCP and UDP) and
	// advertises; port 0 picks a free port (see Provider.GossipAddr). An
	// empty or unspecified IP binds every interface and advertises a private
	// IP of the host.
	GossipAddr string
	// Join lists seed gossip addresses ("host:port"). When non-empty, at
	// least one must answer or StartMember fails with ErrJoin.
	Join []string
	// GossipKey, when set, is a 16, 24 or 32-byte AES key (AES-128/192/256
	// GCM) encrypting all gossip; every node needs the same key.
	GossipKey []byte
	// Logger receives the provider's logs (with "component"="cluster");
	// memberlist's own lines go to it at debug level, its warnings at warn.
	Logger *slog.Logger
	// Profile is ProfileLAN (default) or ProfileLocal.
	Profile string
	// LeaveTimeout bounds each of the two steps of a graceful Shutdown (the
	// leave notice to every peer, then memberlist's Leave broadcast).
	LeaveTimeout time.Duration
}

// DefaultGossipAddr is the gossip address of DefaultConfig: memberlist's
// usual port, on loopback so that a default single node is not exposed.
const DefaultGossipAddr = "127.0.0.1:7946"

// DefaultConfig returns the configuration of a single node: named after the
// host, gossiping on DefaultGossipAddr with the LAN profile.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "twinmesh"
	}
	return Config{
		NodeName:     name,
		GossipAddr:   DefaultGossipAddr,
		Profile:      ProfileLAN,
		Logger:       slog.Default(),
		LeaveTimeout: 5 * time.Second,
	}
}

// validate fills zero values from DefaultConfig and rejects bad ones; the
// errors wrap ErrConfig.
func (c *Config) validate() error {
	def := DefaultConfig()
	if c.NodeName == "" {
		c.NodeName = def.NodeName
	}
	if c.GossipAddr == "" {
		c.GossipAddr = def.GossipAddr
	}
	if c.Profile == "" {
		c.Profile = def.Profile
	}
	if c.Logger == nil {
		c.Logger = def.Logger
	}
	if c.LeaveTimeout == 0 {
		c.LeaveTimeout = def.LeaveTimeout
	}
	if _, _, err := splitGossipAddr(c.GossipAddr); err != nil {
		return err
	}
	for _, seed := range c.Join {
		if strings.TrimSpace(seed) == "" {
			return fmt.Errorf("%w: empty join address", ErrConfig)
		}
		if _, port, err := net.SplitHostPort(seed); err == nil {
			if _, err := parsePort(port); err != nil {
				return fmt.Errorf("%w: join address %q: %v", ErrConfig, seed, err)
			}
		}
	}
	switch n := len(c.GossipKey); n {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("%w: gossip key must be 16, 24 or 32 bytes, not %d", ErrConfig, n)
	}
	if c.Profile != ProfileLAN && c.Profile != ProfileLocal {
		return fmt.Errorf("%w: unknown profile %q (want %q or %q)", ErrConfig, c.Profile, ProfileLAN, ProfileLocal)
	}
	if c.LeaveTimeout < 0 {
		return fmt.Errorf("%w: negative leave timeout %v", ErrConfig, c.LeaveTimeout)
	}
	return nil
}

// memberlistConfig turns the profile into a memberlist configuration; the
// caller sets the delegates.
func (c *Config) memberlistConfig() *memberlist.Config {
	var mc *memberlist.Config
	if c.Profile == ProfileLocal {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	ip, port, _ := splitGossipAddr(c.GossipAddr) // validated
	mc.Name = c.NodeName
	mc.BindAddr = ip.String()
	mc.BindPort = port
	mc.AdvertisePort = port // memberlist replaces it when port is 0
	if !ip.IsUnspecified() {
		mc.AdvertiseAddr = ip.String()
	}
	if len(c.GossipKey) > 0 {
		mc.SecretKey = append([]byte(nil), c.GossipKey...)
	}
	return mc
}

// splitGossipAddr parses "ip:port"; an empty host means every interface.
func splitGossipAddr(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: gossip address %q: %v", ErrConfig, addr, err)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: gossip address %q: %v", ErrConfig, addr, err)
	}
	if host == "" {
		return net.IPv4zero, port, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%w: gossip address %q: host must be an IP address", ErrConfig, addr)
	}
	return ip, port, nil
}

func parsePort(s string) (int, error) {
	port, err := strconv.Atoi(s)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return port, nil
}
