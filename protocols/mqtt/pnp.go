package mqtt

import (
	"net/url"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// maxReasonString bounds the MQTT 5 reason string of a refused publish; a
// validation reason names a path and the expected schema, well under it.
const maxReasonString = 512

// ModelID returns the model-id parameter of an IoT Plug and Play user name,
// "<host>/<deviceId>/?api-version=…&model-id=dtmi:…", or "" when there is
// none. The DTMI itself is checked by the backend. The query is split by
// hand: the Azure IoT device SDKs append the DTMI unescaped, and its ";"
// makes url.ParseQuery refuse the whole query.
func ModelID(username string) string {
	_, query, ok := strings.Cut(username, "?")
	if !ok {
		return ""
	}
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k != "model-id" {
			continue
		}
		if u, err := url.QueryUnescape(v); err == nil {
			return u
		}
		return v
	}
	return ""
}

// announceModel passes the user name's model ID, if any, to a Backend that
// is a ModelAnnouncer; it refuses the connection when the backend refuses
// the ID (not a DTMI).
func (h *hook) announceModel(cl *mochi.Client, username string) bool {
	mid := ModelID(username)
	a, ok := h.s.backend.(ModelAnnouncer)
	if mid == "" || !ok {
		return true
	}
	ctx, cancel := h.ctx()
	defer cancel()
	if err := a.AnnounceModel(ctx, cl.ID, mid); err != nil {
		return h.refuse("bad_model_id", cl, err.Error())
	}
	return true
}

// reasonString is the MQTT 5 reason string of a refused publish: what the
// device must change (a payload that does not match its model, too large,
// too fast); the code's own name for failures that are not its fault.
func reasonString(err error, code packets.Code) string {
	switch errcode.Of(err).PublicCode() {
	case errcode.BadRequest, errcode.TooLarge, errcode.Throttled:
		msg := errcode.Message(err)
		if len(msg) > maxReasonString {
			msg = strings.ToValidUTF8(msg[:maxReasonString], "")
		}
		return msg
	}
	return code.Reason
}
