package coap

import (
	"context"
	"errors"
	"sync"
	"time"
)

// presence decides which devices count as connected over CoAP, which has
// no sessions of its own: a device is connected while it has an
// observation or a DTLS session here, or sent a request within
// PresenceWindow. Changes are applied to the twins by one worker
// (Backend.SetSession), off the request path, newest state first: a device
// whose state flips several times between two runs is written once.
type presence struct {
	s     *Server
	mu    sync.Mutex
	dev   map[string]*pstate
	dirty map[string]struct{} // devices the worker must look at
	wake  chan struct{}
}

type pstate struct {
	last      time.Time // of its last request
	obs, dtls int
	proto     string // of its last request, observation or session
	// applied is the state the twin was last given (and its protocol).
	applied      bool
	appliedProto string
	retryAt      time.Time
}

func newPresence(s *Server) *presence {
	return &presence{s: s, dev: map[string]*pstate{}, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// state returns the device's entry. p.mu must be held.
func (p *presence) state(device string) *pstate {
	st := p.dev[device]
	if st == nil {
		st = &pstate{}
		p.dev[device] = st
	}
	return st
}

// want is the state the device should show at now. p.mu must be held.
func (p *presence) want(st *pstate, now time.Time) bool {
	return st.obs > 0 || st.dtls > 0 || (!st.last.IsZero() && now.Sub(st.last) < p.s.cfg.PresenceWindow)
}

// check marks the device dirty if its twin shows another state. p.mu must
// be held.
func (p *presence) check(device string, st *pstate, now time.Time) {
	w := p.want(st, now)
	if w == st.applied && (!w || st.proto == st.appliedProto) {
		return
	}
	if _, ok := p.dirty[device]; !ok {
		p.dirty[device] = struct{}{}
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// touch records a request from device over proto.
func (p *presence) touch(device, proto string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state(device)
	st.last, st.proto = now, proto
	p.check(device, st, now)
}

// addObs counts an observation of device more (delta 1) or less (-1).
func (p *presence) addObs(device, proto string, delta int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state(device)
	st.obs = max(st.obs+delta, 0)
	if delta > 0 {
		st.proto = proto
	}
	p.check(device, st, p.s.cfg.Now())
}

// addDTLS counts a DTLS session of device more (delta 1) or less (-1).
func (p *presence) addDTLS(device string, delta int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state(device)
	st.dtls = max(st.dtls+delta, 0)
	if delta > 0 {
		st.proto = "coaps"
	}
	p.check(device, st, p.s.cfg.Now())
}

// forget ends a device's presence window (it was disabled or deleted).
func (p *presence) forget(device string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.dev[device]; st != nil {
		st.last = time.Time{}
		p.check(device, st, p.s.cfg.Now())
	}
}

// connected reports what the device's twin was last given.
func (p *presence) connected(device string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.dev[device]
	return st != nil && st.applied
}

// count returns how many devices show as connected.
func (p *presence) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, st := range p.dev {
		if st.applied {
			n++
		}
	}
	return n
}

// run applies presence changes until the server closes; once a second it
// also ends the windows that passed and forgets idle devices.
func (p *presence) run() {
	defer p.s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.s.stop:
			return
		case <-p.wake:
		case <-t.C:
			p.sweep()
		}
		p.apply()
	}
}

// sweep marks the devices whose window ended, and forgets those that
// show as disconnected and have nothing left.
func (p *presence) sweep() {
	now := p.s.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for d, st := range p.dev {
		p.check(d, st, now)
		if _, dirty := p.dirty[d]; !dirty && !st.applied && st.obs == 0 && st.dtls == 0 {
			delete(p.dev, d)
		}
	}
}

// change is one state to write.
type change struct {
	device, proto string
	connected     bool
}

// apply writes the dirty devices' states.
func (p *presence) apply() {
	now := p.s.cfg.Now()
	var todo []change
	p.mu.Lock()
	for d := range p.dirty {
		st := p.dev[d]
		if st == nil {
			delete(p.dirty, d)
			continue
		}
		if now.Before(st.retryAt) {
			continue
		}
		delete(p.dirty, d)
		w := p.want(st, now)
		if w == st.applied && (!w || st.proto == st.appliedProto) {
			continue
		}
		proto := st.proto
		if !w && st.appliedProto != "" {
			proto = st.appliedProto // the session that ends
		}
		todo = append(todo, change{device: d, proto: proto, connected: w})
	}
	p.mu.Unlock()
	for _, c := range todo {
		select {
		case <-p.s.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.s.cfg.RequestTimeout)
		err := p.s.backend.SetSession(ctx, c.device, c.connected, c.proto)
		cancel()
		p.mu.Lock()
		st := p.dev[c.device]
		switch {
		case st == nil:
		case err == nil:
			st.applied, st.appliedProto = c.connected, c.proto
			p.check(c.device, st, now)
		case errors.Is(err, ErrNotFound):
			delete(p.dev, c.device) // deleted: nothing to show
		default:
			p.dirty[c.device], st.retryAt = struct{}{}, now.Add(time.Second)
			if p.s.refusals.allow(c.device+"\x00presence", now) {
				p.s.log.Warn("connection state", "device", c.device, "connected", c.connected, "err", err)
			}
		}
		p.mu.Unlock()
	}
}

// disconnectAll marks every device shown as connected disconnected (the
// node stops), until ctx is done.
func (p *presence) disconnectAll(ctx context.Context) {
	p.mu.Lock()
	var todo []change
	for d, st := range p.dev {
		if st.applied {
			todo = append(todo, change{device: d, proto: st.appliedProto})
		}
	}
	p.mu.Unlock()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, c := range todo {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := p.s.backend.SetSession(ctx, c.device, false, c.proto); err != nil && !errors.Is(err, ErrNotFound) {
				p.s.log.Debug("connection state at stop", "device", c.device, "err", err)
			}
		}()
	}
	wg.Wait()
}
