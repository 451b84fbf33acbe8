package amqp

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Members asks every member of the cluster a question. Each member keeps
// the dead letters of the messages it gave up on (the member that owned
// the device then), so GET .../deadletters gathers them from all.
type Members interface {
	QueryMembers(ctx context.Context, name string, body json.RawMessage) (answers map[string]json.RawMessage, failed map[string]error)
}

// DeadLettersQuery is the name of the member query AnswerDeadLetters
// answers.
const DeadLettersQuery = "amqp.deadletters"

type deadLettersReq struct {
	Endpoint string `json:"endpoint"`
	Limit    int    `json:"limit"`
}

// AnswerDeadLetters answers another member's DeadLettersQuery with this
// member's dead letters of an endpoint.
func (s *Service) AnswerDeadLetters(_ context.Context, body json.RawMessage) (json.RawMessage, error) {
	var r deadLettersReq
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if r.Limit < 1 || r.Limit > 1000 {
		return nil, fmt.Errorf("%w: limit must be 1..1000", ErrInvalid)
	}
	dl, err := s.DeadLetters(r.Endpoint, r.Limit)
	if err != nil {
		return nil, err
	}
	return json.Marshal(dl)
}

// clusterDeadLetters gathers the endpoint's dead letters from every
// member, oldest first, each marked with the member that holds it; the
// members that did not answer are returned too.
func (s *Service) clusterDeadLetters(ctx context.Context, endpoint string, limit int) ([]DeadLetter, []string, error) {
	body, err := json.Marshal(deadLettersReq{Endpoint: endpoint, Limit: limit})
	if err != nil {
		return nil, nil, err
	}
	answers, failed := s.cfg.Members.QueryMembers(ctx, DeadLettersQuery, body)
	out := []DeadLetter{}
	for member, a := range answers {
		var dl []DeadLetter
		if err := json.Unmarshal(a, &dl); err != nil {
			failed[member] = err
			continue
		}
		for i := range dl {
			dl[i].Member = member
		}
		out = append(out, dl...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].DeadAt.Equal(out[j].DeadAt) {
			return out[i].DeadAt.Before(out[j].DeadAt)
		}
		return out[i].Member < out[j].Member
	})
	if len(out) > limit {
		out = out[:limit]
	}
	var missing []string
	for member, err := range failed {
		missing = append(missing, member)
		s.log.Warn("dead letters: a member did not answer", "endpoint", endpoint, "member", member, "err", err)
	}
	slices.Sort(missing)
	return out, missing, nil
}

// missingHeader names the members whose dead letters are not in an
// answer (they did not answer in time).
const missingHeader = "Twinmesh-Members-Missing"

func joinMissing(m []string) string { return strings.Join(m, ",") }
