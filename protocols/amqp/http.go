package amqp

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
)

// IngressDef returns an ingress's status, its URL redacted.
func (s *Service) IngressDef(name string) (IngressStatus, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g := s.ingresses[name]
	if g == nil {
		return IngressStatus{}, ErrNotFound
	}
	return g.status(), nil
}

// Ingresses lists the ingresses, URLs redacted.
func (s *Service) Ingresses() []IngressStatus {
	s.mu.RLock()
	out := make([]IngressStatus, 0, len(s.ingresses))
	for _, g := range s.ingresses {
		out = append(out, g.status())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Mount adds the REST surface of CONTRACT section 8 to mux, each handler
// wrapped by auth (the node's administrator guard).
func (s *Service) Mount(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
	h := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) (any, error)) {
		mux.Handle(pattern, auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, err := fn(w, r)
			if err != nil {
				writeError(w, err)
				return
			}
			if v == nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})))
	}
	name := func(r *http.Request) string { return r.PathValue("name") }
	h("PUT /api/v1/endpoints/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) {
		var e Endpoint
		if err := decode(r, &e); err != nil {
			return nil, err
		}
		e.Name = name(r)
		if err := s.PutEndpoint(e); err != nil {
			return nil, err
		}
		return s.Endpoint(e.Name)
	})
	h("GET /api/v1/endpoints/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) { return s.Endpoint(name(r)) })
	h("GET /api/v1/endpoints", func(_ http.ResponseWriter, _ *http.Request) (any, error) { return s.Endpoints(), nil })
	h("DELETE /api/v1/endpoints/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) {
		return nil, s.DeleteEndpoint(name(r))
	})
	h("GET /api/v1/endpoints/{name}/deadletters", func(w http.ResponseWriter, r *http.Request) (any, error) {
		if _, err := s.Endpoint(name(r)); err != nil {
			return nil, err
		}
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				return nil, errors.Join(ErrInvalid, errors.New("limit must be 1..1000"))
			}
			limit = n
		}
		if s.cfg.Members == nil {
			return s.DeadLetters(name(r), limit)
		}
		dl, missing, err := s.clusterDeadLetters(r.Context(), name(r), limit)
		if len(missing) > 0 {
			w.Header().Set(missingHeader, joinMissing(missing))
		}
		return dl, err
	})
	h("PUT /api/v1/routes/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) {
		var rt Route
		if err := decode(r, &rt); err != nil {
			return nil, err
		}
		rt.Name = name(r)
		if err := s.PutRoute(rt); err != nil {
			return nil, err
		}
		return rt, nil
	})
	h("GET /api/v1/routes/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) { return s.Route(name(r)) })
	h("GET /api/v1/routes", func(_ http.ResponseWriter, _ *http.Request) (any, error) { return s.Routes(), nil })
	h("DELETE /api/v1/routes/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) {
		return nil, s.DeleteRoute(name(r))
	})
	h("PUT /api/v1/ingress/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) {
		var g Ingress
		if err := decode(r, &g); err != nil {
			return nil, err
		}
		g.Name = name(r)
		if err := s.PutIngress(g); err != nil {
			return nil, err
		}
		return s.IngressDef(g.Name)
	})
	h("GET /api/v1/ingress/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) { return s.IngressDef(name(r)) })
	h("GET /api/v1/ingress", func(_ http.ResponseWriter, _ *http.Request) (any, error) { return s.Ingresses(), nil })
	h("DELETE /api/v1/ingress/{name}", func(_ http.ResponseWriter, r *http.Request) (any, error) {
		return nil, s.DeleteIngress(name(r))
	})
}

// decode reads a JSON body of at most 1 MiB, refusing unknown fields.
func decode(r *http.Request, v any) error {
	d := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return errors.Join(ErrInvalid, Redacted(err))
	}
	return nil
}

// Redacted is err with any credentials in URLs it quotes hidden.
func Redacted(err error) error { return errors.New(Redact(err.Error())) }

// writeError answers with the API's error shape (CONTRACT section 2).
func writeError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, ErrInvalid):
		status, code = http.StatusBadRequest, "bad_request"
	case errors.Is(err, ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, ErrConflict):
		status, code = http.StatusConflict, "conflict"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": Redact(err.Error())}})
}
