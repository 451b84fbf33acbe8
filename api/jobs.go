package api

// Fleet jobs (CONTRACT section 9): the REST surface of package jobs, and
// what a job does to the fleet, through the node's System.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/jobs"
	"github.com/twinmesh/twinmesh/api/query"
	"github.com/twinmesh/twinmesh/persistence"
)

func (s *Server) newJobs() *jobs.Manager {
	return jobs.New(jobs.Config{
		Store:   s.sys,
		Fleet:   jobFleet{s},
		Owns:    s.cfg.OwnsJob,
		Publish: s.sys.PublishJob,
		Logger:  s.cfg.Logger,
	})
}

// RunJobs runs the fleet jobs this member owns, and takes over those of
// members that died, until ctx ends.
func (s *Server) RunJobs(ctx context.Context) { s.jobs.Run(ctx) }

// Jobs returns the node's job manager (for the IoT Hub service API).
func (s *Server) Jobs() *jobs.Manager { return s.jobs }

func (s *Server) createJob(w http.ResponseWriter, r *http.Request) error {
	var spec jobs.Spec
	if err := decode(r, &spec); err != nil {
		return err
	}
	j, err := s.jobs.Create(r.Context(), spec)
	var se *query.SyntaxError
	if errors.As(err, &se) {
		writeSyntaxError(w, se)
		return nil
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/jobs/"+j.JobID)
	writeJSON(w, http.StatusCreated, j)
	return nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.jobs.Get(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, j)
	return nil
}

func (s *Server) listJobs(w http.ResponseWriter, _ *http.Request) error {
	list, err := s.jobs.List()
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[jobs.Job]{Items: list})
	return nil
}

func (s *Server) jobDevices(w http.ResponseWriter, r *http.Request) error {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return errcode.New(errcode.BadRequest, "limit must be an integer")
		}
		limit = n
	}
	outs, next, err := s.jobs.Devices(r.PathValue("id"), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[jobs.Outcome]{Items: outs, Next: next})
	return nil
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.jobs.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, j)
	return nil
}

// jobFleet is what a job does to devices, through the node's System.
type jobFleet struct{ s *Server }

// Select streams the query over the store as POST /api/v1/query does.
func (f jobFleet) Select(ctx context.Context, condition, after string, limit int) ([]string, string, error) {
	q, err := jobs.ParseCondition(condition)
	if err != nil {
		return nil, "", err
	}
	h := q.Hints()
	filter := persistence.EntityFilter{Kind: h.Kind, Tags: h.Tags, Under: h.Under}
	var ids []string
	next := ""
	err = f.s.scanQuery(ctx, q, filter, after, func(id string, _ map[string]any) (bool, error) {
		ids = append(ids, id)
		if len(ids) == limit {
			next = id
			return false, nil
		}
		return true, nil
	})
	return ids, next, err
}

func (f jobFleet) GetTwin(ctx context.Context, id string) (json.RawMessage, int64, error) {
	return f.s.sys.GetTwin(ctx, id)
}

func (f jobFleet) PatchTwin(ctx context.Context, id string, desired, tags json.RawMessage, ifVersion int64) (int64, error) {
	_, v, err := f.s.sys.PatchTwin(ctx, id, actors.PatchBody{Desired: desired, Tags: tags}, &ifVersion)
	return v, err
}

func (f jobFleet) InvokeMethod(ctx context.Context, id, method string, payload []byte) (int, []byte, error) {
	if _, err := f.s.sys.Identity(ctx, id); err != nil {
		return 0, nil, err
	}
	if err := f.s.sys.CheckCommand(id, method, payload); err != nil {
		return 0, nil, err
	}
	if f.s.cfg.Methods == nil {
		return 0, nil, errcode.New(errcode.NotConnected, "no protocol adapter is running on this node")
	}
	return f.s.cfg.Methods.InvokeMethod(ctx, id, method, payload)
}

var _ jobs.Fleet = jobFleet{}
var _ jobs.Store = (*actors.System)(nil)
