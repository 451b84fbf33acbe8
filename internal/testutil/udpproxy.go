package testutil

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// UDPProxy relays datagrams between clients and a UDP server, dropping
// and duplicating some in both directions: a lossy link for CoAP tests.
// Each client address gets its own upstream socket, so the server sees one
// endpoint per client, as without the proxy.
type UDPProxy struct {
	t      testing.TB
	ln     *net.UDPConn
	target *net.UDPAddr
	loss   float64
	dup    float64

	mu   sync.Mutex
	rnd  *rand.Rand
	ups  map[string]*net.UDPConn
	done chan struct{}
	wg   sync.WaitGroup

	// Dropped and Duplicated count what the proxy did, both directions.
	Dropped, Duplicated, Relayed atomic.Int64
}

// NewUDPProxy starts a proxy on 127.0.0.1 to target that drops a fraction
// loss of the datagrams and sends a fraction dup of the others twice,
// with a seeded random source; it stops when the test ends.
func NewUDPProxy(t testing.TB, target string, loss, dup float64, seed uint64) *UDPProxy {
	t.Helper()
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &UDPProxy{t: t, ln: ln, target: ta, loss: loss, dup: dup, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ups: map[string]*net.UDPConn{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.downstream()
	t.Cleanup(p.Close)
	return p
}

// Addr is where clients send.
func (p *UDPProxy) Addr() string { return p.ln.LocalAddr().String() }

// Close stops the proxy.
func (p *UDPProxy) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	_ = p.ln.Close()
	p.mu.Lock()
	for _, u := range p.ups {
		_ = u.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// fate decides how many copies of a datagram go through: 0, 1 or 2.
func (p *UDPProxy) fate() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r := p.rnd.Float64(); {
	case r < p.loss:
		p.Dropped.Add(1)
		return 0
	case r < p.loss+p.dup:
		p.Duplicated.Add(1)
		return 2
	}
	return 1
}

// downstream reads what clients send and relays it to the server.
func (p *UDPProxy) downstream() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := p.upstream(from)
		if up == nil {
			return
		}
		for i := p.fate(); i > 0; i-- {
			p.Relayed.Add(1)
			_, _ = up.Write(buf[:n])
		}
	}
}

// upstream returns the socket that speaks to the server for client from.
func (p *UDPProxy) upstream(from *net.UDPAddr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.ups[from.String()]; u != nil {
		return u
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	u, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		p.t.Errorf("udp proxy: %v", err)
		return nil
	}
	p.ups[from.String()] = u
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := u.Read(buf)
			if err != nil {
				return
			}
			for i := p.fate(); i > 0; i-- {
				p.Relayed.Add(1)
				_, _ = p.ln.WriteToUDP(buf[:n], from)
			}
		}
	}()
	return u
}
