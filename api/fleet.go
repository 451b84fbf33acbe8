package api

// Fleet basics (CONTRACT section 9): listing and deleting device
// identities, replacing a twin, and 405 with Allow for a wrong method.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
	"github.com/twinmesh/twinmesh/persistence"
)

// listDevices answers GET /api/v1/devices?status=&under=&limit=&cursor=.
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := persistence.IdentityFilter{Status: q.Get("status"), Under: q.Get("under")}
	if f.Status != "" && f.Status != "enabled" && f.Status != "disabled" {
		return errcode.New(errcode.BadRequest, `status must be "enabled" or "disabled"`)
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errcode.New(errcode.BadRequest, "limit must be between 1 and 1000")
		}
		limit = n
	}
	ef := persistence.EntityFilter{Under: f.Under}
	if err := s.scopeEntities(r, &ef); err != nil {
		return err
	}
	f.Within = ef.Within
	list, next, err := s.sys.ListIdentities(r.Context(), f, q.Get("cursor"), limit)
	if err != nil {
		return err
	}
	out := make([]Device, len(list))
	for i, idn := range list {
		out[i] = deviceView(idn)
	}
	writeJSON(w, 200, items[Device]{Items: out, Next: next})
	return nil
}

// deleteDevice answers DELETE /api/v1/devices/{id}: 204 once the device,
// its identity, twin, inbox and telemetry are gone.
func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	if err := s.sys.DeleteDevice(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// putTwin answers PUT /api/v1/twins/{id}: {"desired":{…},"tags":{…}}
// replaces each section given (one left out stays as it is); If-Match
// honoured as for PATCH.
func (s *Server) putTwin(w http.ResponseWriter, r *http.Request) error {
	ifv, err := parseIfMatch(r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return errcode.New(errcode.BadRequest, "empty body: a JSON document is required")
	}
	var raw map[string]json.RawMessage
	if err := unmarshal(body, &raw); err != nil {
		return err
	}
	var desired, tags map[string]any
	for k, v := range raw {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil || m == nil {
			return errcode.New(errcode.BadRequest, "%q must be a JSON object", k)
		}
		switch k {
		case "desired":
			delete(m, "$version")
			delete(m, "$metadata")
			desired = m
		case "tags":
			tags = m
		default:
			return errcode.New(errcode.BadRequest, `a twin replacement may set "desired" and "tags" only, not %q`, k)
		}
	}
	if tags != nil {
		if err := s.require(r, authz.Admin, "changing tags"); err != nil {
			return err
		}
	}
	doc, v, err := s.sys.ReplaceTwin(r.Context(), r.PathValue("id"), desired, tags, ifv)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", fmt.Sprintf("%q", strconv.FormatInt(v, 10)))
	writeJSON(w, 200, doc)
	return nil
}

// allowed maps each REST path pattern to the methods its routes take, so
// that a request with another method gets 405 and Allow (RFC 9110 15.5.6).
type allowed struct {
	mux     *http.ServeMux
	methods map[string][]string
}

func newAllowed(table []route) *allowed {
	a := &allowed{mux: http.NewServeMux(), methods: map[string][]string{}}
	for _, rt := range table {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if _, seen := a.methods[path]; !seen {
			a.mux.Handle(path, http.NotFoundHandler())
		}
		a.methods[path] = append(a.methods[path], method)
		if method == http.MethodGet {
			a.methods[path] = append(a.methods[path], http.MethodHead)
		}
	}
	for p, m := range a.methods {
		slices.Sort(m)
		a.methods[p] = slices.Compact(m)
	}
	return a
}

// of returns the methods r's path takes, nil if no route has that path.
func (a *allowed) of(r *http.Request) []string {
	probe := r.Clone(r.Context())
	probe.Method = http.MethodGet
	if _, pattern := a.mux.Handler(probe); pattern != "" {
		return a.methods[pattern]
	}
	return nil
}
