package streamclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// RequestFilter is the subscription that receives stream requests.
const RequestFilter = "$iothub/streams/POST/#"

// ErrBadRequest is returned for a stream request that cannot be parsed.
var ErrBadRequest = errors.New("streamclient: malformed stream request")

// Request is a stream request as a device receives it.
type Request struct {
	Name  string // the stream's name, e.g. "ssh"
	RID   string // the request ID the answer must carry
	URL   string // where to connect the WebSocket (ws:// or wss://)
	Token string // the one-time token for that connection
}

// ParseRequest parses a request published on
// $iothub/streams/POST/{name}/?$rid={rid} with its JSON payload. It is
// pure; every error wraps ErrBadRequest.
func ParseRequest(topic string, payload []byte) (Request, error) {
	rest, ok := strings.CutPrefix(topic, "$iothub/streams/POST/")
	if !ok {
		return Request{}, fmt.Errorf("%w: topic %q", ErrBadRequest, topic)
	}
	name, query, ok := strings.Cut(rest, "/?")
	if !ok || name == "" || strings.ContainsAny(name, "/+#") {
		return Request{}, fmt.Errorf("%w: topic %q", ErrBadRequest, topic)
	}
	q, err := url.ParseQuery(query)
	if err != nil || q.Get("$rid") == "" {
		return Request{}, fmt.Errorf("%w: topic %q has no $rid", ErrBadRequest, topic)
	}
	var body struct {
		URL   string `json:"url"`
		Token string `json:"authorizationToken"`
	}
	if err := json.Unmarshal(payload, &body); err != nil {
		return Request{}, fmt.Errorf("%w: payload: %v", ErrBadRequest, err)
	}
	u, err := url.Parse(body.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return Request{}, fmt.Errorf("%w: url %q is not a ws:// or wss:// URL", ErrBadRequest, body.URL)
	}
	if body.Token == "" {
		return Request{}, fmt.Errorf("%w: no authorizationToken", ErrBadRequest)
	}
	return Request{Name: name, RID: q.Get("$rid"), URL: body.URL, Token: body.Token}, nil
}

// ResponseTopic is the topic of the answer to request rid.
func ResponseTopic(status int, rid string) string {
	return "$iothub/streams/res/" + strconv.Itoa(status) + "/?$rid=" + url.QueryEscape(rid)
}
