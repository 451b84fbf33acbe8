package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// opQuery is a read-only question another package asks every member (the
// AMQP dead letters, which each member keeps of the messages it gave up
// on): the cluster package carries it without knowing what it means.
const opQuery = "query"

// QueryHandler answers a member query on this member.
type QueryHandler func(ctx context.Context, body json.RawMessage) (json.RawMessage, error)

type queryReq struct {
	Name string          `json:"name"`
	Body json.RawMessage `json:"body,omitempty"`
}

// queries holds the member query handlers by name.
type queries struct {
	mu sync.RWMutex
	h  map[string]QueryHandler
}

// HandleQuery makes this member answer the member query name with h.
func (p *Placement) HandleQuery(name string, h QueryHandler) {
	p.queries.mu.Lock()
	defer p.queries.mu.Unlock()
	if p.queries.h == nil {
		p.queries.h = map[string]QueryHandler{}
	}
	p.queries.h[name] = h
}

func (p *Placement) serveQuery(ctx context.Context, body []byte) ([]byte, error) {
	var r queryReq
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	p.queries.mu.RLock()
	h := p.queries.h[r.Name]
	p.queries.mu.RUnlock()
	if h == nil {
		return nil, fmt.Errorf("no member query %q on this member", r.Name)
	}
	return h(ctx, r.Body)
}

// QueryMembers asks every live member, this one included, the member
// query name, at once. Answers are by member address; failed holds the
// members that did not answer within the peer timeout, or answered an
// error, with the error.
func (p *Placement) QueryMembers(ctx context.Context, name string, body json.RawMessage) (answers map[string]json.RawMessage, failed map[string]error) {
	answers, failed = map[string]json.RawMessage{}, map[string]error{}
	p.askEvery(ctx, opQuery, queryReq{Name: name, Body: body}, func(addr string, res json.RawMessage, err error) {
		if err != nil {
			failed[addr] = err
			return
		}
		answers[addr] = res
	})
	return answers, failed
}
