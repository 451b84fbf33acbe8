package api

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// OpResult is the answer to an entity operation (CONTRACT section 7).
type OpResult struct {
	Result json.RawMessage `json:"result"`
}

// callOp runs operation {name} of entity {id}: POST
// /api/v1/entities/{id}/ops/{name} with a JSON body of arguments (an empty
// body means none) → 200 {"result": …}. An entity whose kind has no such
// operation answers 404 unknown_op; an error the operation returns answers
// with its code (400 unless it chose another).
func (s *Server) callOp(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	args := json.RawMessage(bytes.TrimSpace(body))
	if len(args) == 0 {
		args = nil
	} else if !json.Valid(args) {
		return errcode.New(errcode.BadRequest, "operation arguments are not a JSON document")
	}
	res, err := s.sys.Call(r.Context(), r.PathValue("id"), r.PathValue("name"), args)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		res = json.RawMessage("null")
	}
	writeJSON(w, http.StatusOK, OpResult{Result: res})
	return nil
}
