package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
)

// Methods invokes direct methods on connected devices. When it cannot, its
// error carries errcode.NotConnected (404) or errcode.Timeout (504); a
// context deadline that passed also answers 504 (see ErrorOf).
type Methods interface {
	InvokeMethod(ctx context.Context, deviceID, method string, payload []byte) (status int, resp []byte, err error)
}

type invokeBody struct {
	Payload        json.RawMessage `json:"payload"`
	TimeoutSeconds *int            `json:"timeoutSeconds"`
}

// Streams opens device streams: it upgrades the request to a WebSocket
// once the device connected back, and relays until the stream ends. It
// returns an error only before the upgrade (the caller writes it). who
// names the caller, for the stream's log line; valid reports whether the
// caller's token still works (it is asked again when tokens change, and a
// stream whose token was revoked is closed).
type Streams interface {
	Open(w http.ResponseWriter, r *http.Request, device, name, who string, valid func() bool) error
}

// openStream serves GET /devices/{id}/streams/{name} (CONTRACT section 11).
func (s *Server) openStream(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Streams == nil {
		return errcode.New(errcode.NotFound, "device streams are not served by this node")
	}
	id := r.PathValue("id")
	if _, err := s.sys.Identity(r.Context(), id); err != nil {
		return err
	}
	p := authz.FromContext(r.Context())
	who := p.Name
	if p.TokenID != "" {
		who = p.Name + " (token " + p.TokenID + ")"
	}
	return s.cfg.Streams.Open(w, r, id, r.PathValue("name"), who, func() bool { return s.authz.Valid(p) })
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) error {
	var b invokeBody
	if err := decode(r, &b); err != nil {
		return err
	}
	timeout := 30
	if b.TimeoutSeconds != nil {
		timeout = *b.TimeoutSeconds
	}
	if timeout < 5 || timeout > 300 {
		return errcode.New(errcode.BadRequest, "timeoutSeconds must be between 5 and 300")
	}
	id := r.PathValue("id")
	if _, err := s.sys.Identity(r.Context(), id); err != nil {
		return err
	}
	if err := s.sys.CheckCommand(id, r.PathValue("name"), b.Payload); err != nil {
		return err
	}
	if s.cfg.Methods == nil {
		return errcode.New(errcode.NotConnected, "no protocol adapter is running on this node")
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(timeout)*time.Second)
	defer cancel()
	payload := []byte(b.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	status, resp, err := s.cfg.Methods.InvokeMethod(ctx, id, r.PathValue("name"), payload)
	if err != nil {
		return err
	}
	if !json.Valid(resp) {
		// Devices should answer JSON; keep whatever they sent readable.
		resp, _ = json.Marshal(string(resp))
	}
	writeJSON(w, 200, map[string]any{"status": status, "payload": json.RawMessage(resp)})
	return nil
}

type messageBody struct {
	Payload    json.RawMessage   `json:"payload"`
	TTLSeconds int               `json:"ttlSeconds"`
	Properties map[string]string `json:"properties"`
}

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) error {
	var b messageBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if len(b.Payload) == 0 {
		return errcode.New(errcode.BadRequest, "payload is required")
	}
	payload := []byte(b.Payload)
	// A JSON string payload is sent as its text, so a device gets "hello",
	// not "\"hello\"".
	var str string
	if json.Unmarshal(b.Payload, &str) == nil {
		payload = []byte(str)
	}
	m, err := s.sys.SendMessage(r.Context(), r.PathValue("id"), actors.OutgoingMessage{
		Payload: payload, Properties: b.Properties, TTL: time.Duration(b.TTLSeconds) * time.Second})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"messageId": m.ID, "expiresAt": m.ExpiresAt})
	return nil
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) error {
	msgs, err := s.sys.Messages(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, messageView(m))
	}
	writeJSON(w, 200, items[Message]{Items: out})
	return nil
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sys.Message(r.Context(), r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, messageView(m))
	return nil
}

func (s *Server) listGrants(w http.ResponseWriter, r *http.Request) error {
	g, err := s.sys.Grants(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, items[string]{Items: g})
	return nil
}

func (s *Server) putGrant(w http.ResponseWriter, r *http.Request) error {
	if err := s.sys.Grant(r.Context(), r.PathValue("id"), r.PathValue("grantee")); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"device": r.PathValue("id"), "grantee": r.PathValue("grantee")})
	return nil
}

func (s *Server) deleteGrant(w http.ResponseWriter, r *http.Request) error {
	if err := s.sys.Revoke(r.Context(), r.PathValue("id"), r.PathValue("grantee")); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"revoked": r.PathValue("grantee")})
	return nil
}
