package coap

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Resource is one of the resources of CONTRACT section 10.
type Resource int

// The resources a device uses.
const (
	ResourceUnknown   Resource = iota
	ResourceTelemetry          // /devices/{id}/messages/events
	ResourceTwin               // /devices/{id}/twin
	ResourceDesired            // /devices/{id}/twin/desired
	ResourceReported           // /devices/{id}/twin/reported
	ResourceInbox              // /devices/{id}/messages/devicebound
	ResourceMessage            // /devices/{id}/messages/devicebound/{messageId}
)

var resourceNames = [...]string{"unknown", "telemetry", "twin", "desired", "reported", "devicebound", "message"}

// String returns the resource's name as metrics label it.
func (r Resource) String() string {
	if r >= 0 && int(r) < len(resourceNames) {
		return resourceNames[r]
	}
	return "unknown"
}

// Target is a parsed request path.
type Target struct {
	Resource  Resource
	Device    string
	MessageID string // of ResourceMessage
}

// maxSegment bounds one path segment (a device or message ID).
const maxSegment = 128

// ParsePath parses the Uri-Path segments of a request (already
// percent-decoded, one option per segment; a single trailing empty segment,
// from a trailing slash, is ignored). It is pure and total: every input
// yields a Target or an error of code NotFound.
func ParsePath(segs []string) (Target, error) {
	if n := len(segs); n > 0 && segs[n-1] == "" {
		segs = segs[:n-1]
	}
	bad := func() (Target, error) {
		return Target{}, errcode.New(errcode.NotFound, "no resource at %s", clip("/"+strings.Join(segs, "/")))
	}
	if len(segs) < 3 || segs[0] != "devices" || !validSegment(segs[1]) {
		return bad()
	}
	t := Target{Device: segs[1]}
	switch rest := segs[2:]; {
	case len(rest) == 2 && rest[0] == "messages" && rest[1] == "events":
		t.Resource = ResourceTelemetry
	case len(rest) == 1 && rest[0] == "twin":
		t.Resource = ResourceTwin
	case len(rest) == 2 && rest[0] == "twin" && rest[1] == "desired":
		t.Resource = ResourceDesired
	case len(rest) == 2 && rest[0] == "twin" && rest[1] == "reported":
		t.Resource = ResourceReported
	case len(rest) == 2 && rest[0] == "messages" && rest[1] == "devicebound":
		t.Resource = ResourceInbox
	case len(rest) == 3 && rest[0] == "messages" && rest[1] == "devicebound" && validSegment(rest[2]):
		t.Resource, t.MessageID = ResourceMessage, rest[2]
	default:
		return bad()
	}
	return t, nil
}

// validSegment accepts what can be a device or message ID: 1 to 128 bytes
// of UTF-8 without control characters. The registry decides whether it
// exists.
func validSegment(s string) bool {
	if s == "" || len(s) > maxSegment || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Query is what the adapter reads of the Uri-Query options.
type Query struct {
	// SAS is the shared access signature of the "sas" option, "" if none.
	SAS string
}

// sasPrefix starts every SAS token.
const sasPrefix = "SharedAccessSignature "

// ParseQuery reads the Uri-Query options (already percent-decoded, one
// "name=value" per option); names other than "sas" are ignored. A token
// that arrives still percent-encoded (a client that does not decode URIs)
// is decoded. It is pure and total: every input yields a Query or an error
// of code BadRequest.
func ParseQuery(opts []string) (Query, error) {
	var q Query
	seen := false
	for _, o := range opts {
		name, value, _ := strings.Cut(o, "=")
		if name != "sas" {
			continue
		}
		if seen {
			return Query{}, errcode.New(errcode.BadRequest, "more than one sas query option")
		}
		seen = true
		if !strings.HasPrefix(value, sasPrefix) && strings.HasPrefix(value, "SharedAccessSignature%20") {
			dec, err := url.PathUnescape(value)
			if err != nil {
				return Query{}, errcode.New(errcode.BadRequest, "sas query option: %v", err)
			}
			value = dec
		}
		if value == "" {
			return Query{}, errcode.New(errcode.BadRequest, "empty sas query option")
		}
		q.SAS = value
	}
	return q, nil
}

// SASQuery returns the URI query that carries token on the plain listener,
// "sas=" and the token percent-encoded (every byte but the unreserved
// characters of RFC 3986), ready to append to a coap:// URI after "?".
// Clients split the query at "&" and decode each part into a Uri-Query
// option, which gives back the token.
func SASQuery(token string) string {
	const hex = "0123456789ABCDEF"
	b := []byte("sas=")
	for i := 0; i < len(token); i++ {
		c := token[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) <= 64 {
		return fmt.Sprintf("%q", s)
	}
	for i := 64; i > 0; i-- {
		if utf8.ValidString(s[:i]) {
			return fmt.Sprintf("%q…", s[:i])
		}
	}
	return "…"
}
