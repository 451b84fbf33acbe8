package api

import (
	"encoding/json"
	"net/http"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// putModel stores a DTDL v3 interface under its DTMI (CONTRACT section 12).
func (s *Server) putModel(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	id := r.PathValue("dtmi")
	created, err := s.sys.PutModel(r.Context(), id, body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, json.RawMessage(body))
	return nil
}

// getModel returns the stored document; with ?view=resolved, the parsed
// model (schemas inline, components linked) that the dashboard reads.
func (s *Server) getModel(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("dtmi")
	switch r.URL.Query().Get("view") {
	case "":
		doc, err := s.sys.GetModel(r.Context(), id)
		if err != nil {
			return err
		}
		writeJSON(w, 200, doc)
	case "resolved":
		in, err := s.sys.Model(r.Context(), id)
		if err != nil {
			return err
		}
		writeJSON(w, 200, in)
	default:
		return errcode.New(errcode.BadRequest, "view must be resolved or absent")
	}
	return nil
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) error {
	list, err := s.sys.Models(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[json.RawMessage]{Items: nonNil(list)})
	return nil
}

// deleteModel removes a model; 409 while a device or another model uses it.
func (s *Server) deleteModel(w http.ResponseWriter, r *http.Request) error {
	if err := s.sys.DeleteModel(r.Context(), r.PathValue("dtmi")); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"deleted": r.PathValue("dtmi")})
	return nil
}

// withModelID adds "modelId" to a twin document of a device that follows a
// model; other twins are returned unchanged.
func (s *Server) withModelID(id string, doc json.RawMessage) json.RawMessage {
	return WithModelID(s.sys, id, doc)
}

// ModelIDs is what WithModelID needs: the DTMI a device follows.
type ModelIDs interface {
	DeviceModelID(deviceID string) string
}

// WithModelID adds "modelId" to the twin document doc of device id if it
// follows a model (CONTRACT section 12), for every surface that returns a
// twin: REST and the WebSocket get and patch ops.
func WithModelID(models ModelIDs, id string, doc json.RawMessage) json.RawMessage {
	mid := models.DeviceModelID(id)
	if mid == "" {
		return doc
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(doc, &m) != nil {
		return doc
	}
	m["modelId"], _ = json.Marshal(mid)
	out, err := json.Marshal(m)
	if err != nil {
		return doc
	}
	return out
}
