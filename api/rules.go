package api

import (
	"encoding/json"
	"net/http"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
)

func alertID(r *http.Request) string {
	if id := r.PathValue("id"); id != "" {
		return id
	}
	return rules.AlertID(r.PathValue("rule"), r.PathValue("entity"))
}

func (s *Server) putRule(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if !json.Valid(body) {
		return errcode.New(errcode.BadRequest, "malformed JSON rule")
	}
	doc, created, err := s.sys.PutRule(r.Context(), r.PathValue("id"), body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, doc)
	return nil
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request) error {
	doc, err := s.sys.GetRule(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, doc)
	return nil
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) error {
	list, err := s.sys.Rules(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[json.RawMessage]{Items: nonNil(list)})
	return nil
}

func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request) error {
	if err := s.sys.DeleteRule(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"deleted": r.PathValue("id")})
	return nil
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	switch st := q.Get("state"); st {
	case "", rules.StateActive, rules.StateAcknowledged, rules.StateCleared:
	default:
		return errcode.New(errcode.BadRequest, "state must be active, acknowledged or cleared")
	}
	under, err := s.scopeUnder(r, q.Get("under"))
	if err != nil {
		return err
	}
	list, err := s.sys.Alerts(r.Context(), actors.AlertFilter{State: q.Get("state"), Under: under})
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[rules.Alert]{Items: list})
	return nil
}

func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) error {
	a, err := s.sys.Alert(r.Context(), alertID(r))
	if err != nil {
		return err
	}
	writeJSON(w, 200, a)
	return nil
}

func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) error {
	a, err := s.sys.AckAlert(r.Context(), alertID(r))
	if err != nil {
		return err
	}
	writeJSON(w, 200, a)
	return nil
}
