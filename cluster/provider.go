package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/hashicorp/memberlist"
)

// Config configures a Provider.
type Config struct {
	// NodeName is the memberlist node name, unique within the cluster.
	NodeName string
	// GossipAddr is the memberlist bind address; port 0 picks a free port.
	GossipAddr string
	// Join lists seed gossip addresses. When non-empty, at least one must answer.
	Join []string
	// GossipKey, when set, is a 16, 24 or 32-byte AES key encrypting gossip.
	GossipKey []byte
	// Logger receives the provider's logs; memberlist's own go to it at debug level.
	Logger *slog.Logger
	// Profile is "lan" (default, memberlist.DefaultLANConfig) or "local"
	// (DefaultLocalConfig: faster failure detection, for tests on loopback).
	Profile string
}

// DefaultConfig returns a Config for a single node on loopback.
func DefaultConfig() Config {
	return Config{NodeName: "twinmesh", GossipAddr: "127.0.0.1:7946", Profile: "lan"}
}

// Member is one member as this node sees it.
type Member struct {
	Name   string   `json:"name"`
	Gossip string   `json:"gossip"`
	Remote string   `json:"remote"`
	ID     string   `json:"id"`
	State  string   `json:"state"` // alive, suspect, dead or left
	Self   bool     `json:"self,omitempty"`
	Kinds  []string `json:"kinds,omitempty"`
}

// meta is what a member gossips about itself (memberlist limits it to 512 bytes).
type meta struct {
	ID    string   `json:"id"`
	Host  string   `json:"host"`
	Port  int      `json:"port"`
	Kinds []string `json:"kinds"`
}

// Provider implements protoactor's cluster.ClusterProvider with memberlist.
type Provider struct {
	cfg  Config
	log  *slog.Logger
	host string
	port int

	mu      sync.Mutex
	ml      *memberlist.Memberlist
	self    meta
	seen    map[string]Member // every member seen this run, by name
	cluster *pcluster.Cluster

	lastTopology string        // member IDs last pushed; only loop touches it
	kick         chan struct{} // topology changed; buffered 1, so events coalesce
	done         chan struct{}
	wg           sync.WaitGroup
}

// NewProvider validates cfg.
func NewProvider(cfg Config) (*Provider, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("cluster: NodeName is required")
	}
	if cfg.GossipAddr == "" {
		cfg.GossipAddr = DefaultConfig().GossipAddr
	}
	host, portStr, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip address %q: %w", cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("cluster: gossip address %q: bad port", cfg.GossipAddr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if n := len(cfg.GossipKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("cluster: gossip key must be 16, 24 or 32 bytes, not %d", n)
	}
	switch cfg.Profile {
	case "", "lan", "local":
	default:
		return nil, fmt.Errorf("cluster: unknown profile %q (lan or local)", cfg.Profile)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Provider{cfg: cfg, log: cfg.Logger.With("component", "cluster"), host: host, port: port,
		seen: map[string]Member{}, kick: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// StartMember joins the gossip cluster and starts feeding protoactor's
// member list.
func (p *Provider) StartMember(c *pcluster.Cluster) error {
	host, portStr, err := net.SplitHostPort(c.ActorSystem.Address())
	if err != nil {
		return fmt.Errorf("cluster: actor system address %q: %w", c.ActorSystem.Address(), err)
	}
	port, _ := strconv.Atoi(portStr)
	kinds := c.GetClusterKinds()
	sort.Strings(kinds)
	p.mu.Lock()
	p.cluster = c
	p.self = meta{ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: kinds}
	p.mu.Unlock()
	return p.start(false)
}

// StartClient joins as a client: it gossips no kinds, so no grain is placed on it.
func (p *Provider) StartClient(c *pcluster.Cluster) error {
	host, portStr, _ := net.SplitHostPort(c.ActorSystem.Address())
	port, _ := strconv.Atoi(portStr)
	p.mu.Lock()
	p.cluster = c
	p.self = meta{ID: c.ActorSystem.ID, Host: host, Port: port}
	p.mu.Unlock()
	return p.start(true)
}

func (p *Provider) start(client bool) error {
	var mc *memberlist.Config
	if p.cfg.Profile == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = p.cfg.NodeName
	mc.BindAddr, mc.BindPort = p.host, p.port
	mc.AdvertisePort = p.port
	if ip := net.ParseIP(p.host); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr = p.host
	}
	mc.SecretKey = p.cfg.GossipKey
	mc.Delegate = delegate{p}
	mc.Events = events{p}
	mc.Logger = log.New(slogWriter{p.log}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: gossip listener %s: %w", p.cfg.GossipAddr, err)
	}
	p.mu.Lock()
	p.ml = ml
	p.mu.Unlock()
	if len(p.cfg.Join) > 0 {
		n, err := ml.Join(p.cfg.Join)
		if err != nil && n == 0 {
			_ = ml.Shutdown()
			return fmt.Errorf("cluster: join %v: %w", p.cfg.Join, err)
		}
		p.log.Info("joined cluster", "seeds", p.cfg.Join, "contacted", n)
	}
	// The first topology is pushed on the caller's goroutine, before the
	// cluster serves requests: protoactor's disthash reads its rendezvous
	// table without a lock (upstream issue #1131), so the write must
	// happen-before the first lookup.
	p.publish()
	p.wg.Add(1)
	go p.loop()
	p.log.Info("gossip started", "client", client, "node", p.cfg.NodeName)
	return nil
}

// loop pushes the topology to protoactor whenever membership changed. It is
// the only caller of UpdateClusterTopology, so updates never interleave.
func (p *Provider) loop() {
	defer p.wg.Done()
	tick := time.NewTicker(2 * time.Second) // also catches suspect ↔ alive transitions
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		case <-tick.C:
		}
		p.publish()
	}
}

func (p *Provider) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Provider) publish() {
	p.mu.Lock()
	ml, c := p.ml, p.cluster
	p.mu.Unlock()
	if ml == nil || c == nil {
		return
	}
	var members pcluster.Members
	for _, n := range ml.Members() {
		m, ok := decodeMeta(n.Meta)
		if !ok || len(m.Kinds) == 0 {
			continue
		}
		p.record(n, m)
		if n.State == memberlist.StateAlive || n.State == memberlist.StateSuspect {
			members = append(members, &pcluster.Member{Id: m.ID, Host: m.Host, Port: int32(m.Port), Kinds: m.Kinds})
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Id < members[j].Id })
	key := ""
	for _, m := range members {
		key += m.Id + ","
	}
	if key == p.lastTopology {
		return
	}
	p.lastTopology = key
	c.MemberList.UpdateClusterTopology(members)
}

func decodeMeta(b []byte) (meta, bool) {
	var m meta
	if len(b) == 0 || json.Unmarshal(b, &m) != nil || m.ID == "" {
		return m, false
	}
	return m, true
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateLeft:
		return "left"
	default:
		return "dead"
	}
}

func (p *Provider) record(n *memberlist.Node, m meta) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[n.Name] = Member{Name: n.Name, Gossip: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		Remote: net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), ID: m.ID, State: stateName(n.State),
		Self: n.Name == p.cfg.NodeName, Kinds: m.Kinds}
}

// Shutdown leaves the cluster (gracefully: a Leave broadcast, so others see
// "left" at once instead of detecting a failure) and stops gossip.
func (p *Provider) Shutdown(graceful bool) error {
	p.mu.Lock()
	ml := p.ml
	p.ml = nil
	p.mu.Unlock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
	if ml == nil {
		return nil
	}
	if graceful {
		if err := ml.Leave(5 * time.Second); err != nil {
			p.log.Warn("leave", "err", err)
		}
	}
	return ml.Shutdown()
}

// GossipAddr returns the gossip address actually bound.
func (p *Provider) GossipAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ml == nil {
		return p.cfg.GossipAddr
	}
	n := p.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Members returns every member seen during this run, sorted by name.
func (p *Provider) Members() []Member {
	p.mu.Lock()
	ml := p.ml
	p.mu.Unlock()
	if ml != nil {
		for _, n := range ml.Members() {
			if m, ok := decodeMeta(n.Meta); ok {
				p.record(n, m)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.seen))
	for _, m := range p.seen {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// delegate answers memberlist's questions about this node.
type delegate struct{ p *Provider }

func (d delegate) NodeMeta(limit int) []byte {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	b, _ := json.Marshal(d.p.self)
	if len(b) > limit {
		d.p.log.Error("node metadata over memberlist's limit; kinds dropped", "bytes", len(b), "limit", limit)
		b, _ = json.Marshal(meta{ID: d.p.self.ID, Host: d.p.self.Host, Port: d.p.self.Port})
	}
	return b
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

// events turns membership events into topology pushes. memberlist calls it
// synchronously, so it only records and signals.
type events struct{ p *Provider }

func (e events) NotifyJoin(n *memberlist.Node) { e.note(n, "joined") }
func (e events) NotifyLeave(n *memberlist.Node) {
	e.note(n, map[bool]string{true: "left", false: "failed"}[n.State == memberlist.StateLeft])
}
func (e events) NotifyUpdate(n *memberlist.Node) { e.note(n, "updated") }

func (e events) note(n *memberlist.Node, what string) {
	if m, ok := decodeMeta(n.Meta); ok {
		e.p.record(n, m)
	}
	e.p.log.Info("member "+what, "member", n.Name, "addr", n.Address(), "state", stateName(n.State))
	e.p.changed()
}

// slogWriter routes memberlist's standard-library logs to slog at debug
// level (warnings and errors at warn).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	s := string(b)
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	lvl := slog.LevelDebug
	if len(s) > 7 && (s[:7] == "[WARN] " || s[:7] == "[ERR] ") {
		lvl = slog.LevelWarn
	}
	w.l.Log(context.Background(), lvl, s, "source", "memberlist")
	return len(b), nil
}

var (
	_ pcluster.ClusterProvider = (*Provider)(nil)
	_ memberlist.Delegate      = delegate{}
	_ memberlist.EventDelegate = events{}
	_ io.Writer                = slogWriter{}
)
