package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
	"github.com/twinmesh/twinmesh/persistence"
)

func (s *Server) putEntity(w http.ResponseWriter, r *http.Request) error {
	var spec actors.EntitySpec
	if err := decode(r, &spec); err != nil {
		return err
	}
	if err := s.checkPlacement(r, spec); err != nil {
		return err
	}
	ent, created, err := s.sys.PutEntity(r.Context(), r.PathValue("id"), spec)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, entityView(ent))
	return nil
}

func (s *Server) getEntity(w http.ResponseWriter, r *http.Request) error {
	ent, err := s.sys.GetEntity(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, entityView(ent))
	return nil
}

func (s *Server) deleteEntity(w http.ResponseWriter, r *http.Request) error {
	recursive, _ := strconv.ParseBool(r.URL.Query().Get("recursive"))
	n, err := s.sys.DeleteEntity(r.Context(), r.PathValue("id"), recursive)
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]int{"deleted": n})
	return nil
}

func (s *Server) children(w http.ResponseWriter, r *http.Request) error {
	list, err := s.sys.Children(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[Entity]{Items: entityViews(list)})
	return nil
}

func (s *Server) tree(w http.ResponseWriter, r *http.Request) error {
	list, err := s.sys.Tree(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[Entity]{Items: entityViews(list)})
	return nil
}

func filterFrom(r *http.Request) (persistence.EntityFilter, string, int, error) {
	q := r.URL.Query()
	f := persistence.EntityFilter{Kind: q.Get("kind"), Under: q.Get("under")}
	for k, v := range q {
		if name, ok := strings.CutPrefix(k, "tag."); ok && len(v) > 0 {
			if f.Tags == nil {
				f.Tags = map[string]string{}
			}
			f.Tags[name] = v[0]
		}
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return f, "", 0, errcode.New(errcode.BadRequest, "limit must be a positive integer")
		}
		limit = n
	}
	return f, q.Get("cursor"), limit, nil
}

func (s *Server) listEntities(w http.ResponseWriter, r *http.Request) error {
	f, cursor, limit, err := filterFrom(r)
	if err != nil {
		return err
	}
	if err := s.scopeEntities(r, &f); err != nil {
		return err
	}
	if limit == 0 || limit > 1000 {
		limit = min(max(limit, 100), 1000)
	}
	list, next, err := s.sys.ListEntities(r.Context(), f, cursor, limit)
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[Entity]{Items: entityViews(list), Next: next})
	return nil
}

// putDevice registers a device identity; its body, an entity spec, is
// optional.
func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var b struct {
		actors.EntitySpec
		// ModelID names the device's DTDL model (CONTRACT section 12).
		ModelID *string `json:"modelId"`
	}
	if len(body) > 0 {
		if err := unmarshal(body, &b); err != nil {
			return err
		}
	}
	spec := b.EntitySpec
	if err := s.checkPlacement(r, spec); err != nil {
		return err
	}
	if b.ModelID != nil && *b.ModelID != "" {
		if _, err := s.sys.Model(r.Context(), *b.ModelID); err != nil {
			return errcode.New(errcode.BadRequest, "modelId: %v; PUT /api/v1/models/%s first", errcode.Message(err), *b.ModelID)
		}
	}
	idn, created, err := s.sys.RegisterDevice(r.Context(), r.PathValue("id"), spec.Kind, &spec)
	if err != nil {
		return err
	}
	if b.ModelID != nil && *b.ModelID != idn.ModelID {
		if err := s.sys.SetDeviceModel(r.Context(), idn.DeviceID, *b.ModelID, true); err != nil {
			return err
		}
		idn.ModelID = *b.ModelID
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, deviceView(idn))
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	idn, err := s.sys.Identity(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, deviceView(idn))
	return nil
}

func (s *Server) patchDevice(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Status string `json:"status"`
	}
	if err := decode(r, &b); err != nil {
		return err
	}
	idn, err := s.sys.SetDeviceStatus(r.Context(), r.PathValue("id"), b.Status)
	if err != nil {
		return err
	}
	writeJSON(w, 200, deviceView(idn))
	return nil
}

func (s *Server) deviceToken(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.SignToken == nil {
		return errcode.New(errcode.NotFound, "token minting is not configured")
	}
	ttl := time.Hour
	if v := r.URL.Query().Get("ttl"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 365*24*3600 {
			return errcode.New(errcode.BadRequest, "ttl must be seconds between 1 and 31536000")
		}
		ttl = time.Duration(n) * time.Second
	}
	idn, err := s.sys.Identity(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	tok, exp, err := s.cfg.SignToken(idn.DeviceID, idn.PrimaryKey, ttl)
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]any{"token": tok, "expiresAt": exp.UTC()})
	return nil
}

func (s *Server) getTwin(w http.ResponseWriter, r *http.Request) error {
	doc, v, err := s.sys.GetTwin(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	etag := fmt.Sprintf("%q", strconv.FormatInt(v, 10))
	w.Header().Set("ETag", etag)
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, 200, s.withModelID(r.PathValue("id"), doc))
	return nil
}

// parseIfMatch reads an If-Match header: a quoted (or bare) version, or
// "*" / absent for an unconditional write (nil).
func parseIfMatch(h string) (*int64, error) {
	h = strings.TrimSpace(h)
	if h == "" || h == "*" {
		return nil, nil
	}
	h = strings.TrimPrefix(h, "W/")
	v, err := strconv.ParseInt(strings.Trim(h, `"`), 10, 64)
	if err != nil || v < 0 {
		return nil, errcode.New(errcode.BadRequest, `If-Match must be a twin version such as "7"`)
	}
	return &v, nil
}

func (s *Server) patchTwin(w http.ResponseWriter, r *http.Request) error {
	ifv, err := parseIfMatch(r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := decode(r, &raw); err != nil {
		return err
	}
	for k := range raw {
		if k != "desired" && k != "tags" {
			return errcode.New(errcode.BadRequest, `a twin patch may change "desired" and "tags" only, not %q`, k)
		}
	}
	if _, ok := raw["tags"]; ok {
		if err := s.require(r, authz.Admin, "changing tags"); err != nil {
			return err
		}
	}
	if err := s.sys.CheckDesired(r.PathValue("id"), raw["desired"]); err != nil {
		return err
	}
	doc, v, err := s.sys.PatchTwin(r.Context(), r.PathValue("id"), actors.PatchBody{Desired: raw["desired"], Tags: raw["tags"]}, ifv)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", fmt.Sprintf("%q", strconv.FormatInt(v, 10)))
	writeJSON(w, 200, s.withModelID(r.PathValue("id"), doc))
	return nil
}

func (s *Server) queryTwins(w http.ResponseWriter, r *http.Request) error {
	f, cursor, limit, err := filterFrom(r)
	if err != nil {
		return err
	}
	if err := s.scopeEntities(r, &f); err != nil {
		return err
	}
	list, next, err := s.sys.QueryTwins(r.Context(), f, cursor, limit)
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[json.RawMessage]{Items: nonNil(list), Next: next})
	return nil
}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, errcode.New(errcode.BadRequest, "%s must be an RFC 3339 time", name)
	}
	return t, nil
}

func (s *Server) telemetry(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, err := parseTime("from", q.Get("from"))
	if err != nil {
		return err
	}
	to, err := parseTime("to", q.Get("to"))
	if err != nil {
		return err
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > 10000 {
			return errcode.New(errcode.BadRequest, "limit must be between 1 and 10000")
		}
	}
	recs, err := s.sys.TelemetryHistory(r.Context(), r.PathValue("id"),
		persistence.TelemetryQuery{Name: q.Get("name"), From: from, To: to, Limit: limit})
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[TelemetryRecord]{Items: telemetryViews(recs)})
	return nil
}

// forgetMember answers DELETE /api/v1/cluster/members/{node}: 204 once the
// node no longer counts in the cluster's majorities, 409 while it is a live
// member.
func (s *Server) forgetMember(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.ForgetMember == nil {
		return errcode.New(errcode.NotFound, "this node is not in a cluster")
	}
	if err := s.cfg.ForgetMember(r.Context(), r.PathValue("node")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// backup answers GET /api/v1/backup: the store's file, consistent as of one
// read transaction, streamed (`twinmesh backup` uses it while a node runs).
func (s *Server) backup(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Backup == nil {
		return errcode.New(errcode.NotFound, "this node has no store to copy")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="twinmesh.db"`)
	if _, err := s.cfg.Backup(w); err != nil {
		// The status is sent: cut the response, so the client sees a
		// short copy rather than a complete-looking one.
		s.log.Error("backup", "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *Server) cluster(w http.ResponseWriter, _ *http.Request) error {
	if s.cfg.Cluster == nil {
		writeJSON(w, 200, map[string]any{"self": s.sys.NodeName(), "members": []any{}})
		return nil
	}
	writeJSON(w, 200, s.cfg.Cluster())
	return nil
}
