package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// TopicKind classifies a topic of the IoT Hub device topic scheme.
type TopicKind int

// The topics a device publishes to or subscribes to.
const (
	TopicUnknown           TopicKind = iota
	TopicTelemetry                   // devices/{id}/messages/events/{bag}
	TopicDeviceBound                 // devices/{id}/messages/devicebound/{bag} (a subscription filter ends in #)
	TopicTwinGet                     // $iothub/twin/GET/?$rid={rid}
	TopicTwinPatchReported           // $iothub/twin/PATCH/properties/reported/?$rid={rid}
	TopicTwinResponse                // $iothub/twin/res/# (subscription)
	TopicTwinDesired                 // $iothub/twin/PATCH/properties/desired/# (subscription)
	TopicMethodRequest               // $iothub/methods/POST/# (subscription)
	TopicMethodResponse              // $iothub/methods/res/{status}/?$rid={rid}
	TopicStreamRequest               // $iothub/streams/POST/# (subscription)
	TopicStreamResponse              // $iothub/streams/res/{status}/?$rid={rid}
)

// ErrBadTopic is returned for topics outside the scheme.
var ErrBadTopic = errors.New("topic outside the IoT Hub device scheme")

// Topic is a parsed device topic.
type Topic struct {
	Kind     TopicKind
	DeviceID string            // for devices/{id}/… topics
	Props    map[string]string // the decoded property bag (or $iothub query)
	RID      string            // $rid of twin and method topics
	Status   int               // status of a method or stream response
}

// ParseTopic parses a topic a device publishes to. It is pure and total:
// every input yields a Topic or an error wrapping ErrBadTopic.
func ParseTopic(topic string) (Topic, error) {
	if rest, ok := strings.CutPrefix(topic, "devices/"); ok {
		id, rest, ok := strings.Cut(rest, "/")
		if !ok || id == "" || strings.ContainsAny(id, "+#") {
			return Topic{}, fmt.Errorf("%w: %q", ErrBadTopic, topic)
		}
		var kind TopicKind
		switch {
		case strings.HasPrefix(rest, "messages/events/"):
			kind, rest = TopicTelemetry, strings.TrimPrefix(rest, "messages/events/")
		case rest == "messages/events":
			kind, rest = TopicTelemetry, ""
		case strings.HasPrefix(rest, "messages/devicebound/"):
			kind, rest = TopicDeviceBound, strings.TrimPrefix(rest, "messages/devicebound/")
		default:
			return Topic{}, fmt.Errorf("%w: %q", ErrBadTopic, topic)
		}
		props, err := ParsePropertyBag(rest)
		if err != nil {
			return Topic{}, err
		}
		return Topic{Kind: kind, DeviceID: id, Props: props}, nil
	}
	rest, ok := strings.CutPrefix(topic, "$iothub/")
	if !ok {
		return Topic{}, fmt.Errorf("%w: %q", ErrBadTopic, topic)
	}
	path, query, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return Topic{}, fmt.Errorf("%w: query of %q: %v", ErrBadTopic, topic, err)
	}
	t := Topic{Props: map[string]string{}}
	for k, v := range q {
		t.Props[k] = v[0]
	}
	t.RID = t.Props["$rid"]
	switch {
	case path == "twin/GET/":
		t.Kind = TopicTwinGet
	case path == "twin/PATCH/properties/reported/":
		t.Kind = TopicTwinPatchReported
	case strings.HasPrefix(path, "methods/res/"):
		st, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(path, "methods/res/"), "/"))
		if err != nil || st < 100 || st > 999 {
			return Topic{}, fmt.Errorf("%w: method status in %q", ErrBadTopic, topic)
		}
		t.Kind, t.Status = TopicMethodResponse, st
	case strings.HasPrefix(path, "streams/res/"):
		st, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(path, "streams/res/"), "/"))
		if err != nil || st < 100 || st > 999 {
			return Topic{}, fmt.Errorf("%w: stream status in %q", ErrBadTopic, topic)
		}
		t.Kind, t.Status = TopicStreamResponse, st
	default:
		return Topic{}, fmt.Errorf("%w: %q", ErrBadTopic, topic)
	}
	if t.RID == "" {
		return Topic{}, fmt.Errorf("%w: %q has no $rid", ErrBadTopic, topic)
	}
	return t, nil
}

// ParseFilter classifies a subscription filter and names the device it is
// about (empty for the $iothub filters, which are always the subscriber's own).
func ParseFilter(filter string) (TopicKind, string, error) {
	switch filter {
	case "$iothub/twin/res/#":
		return TopicTwinResponse, "", nil
	case "$iothub/twin/PATCH/properties/desired/#":
		return TopicTwinDesired, "", nil
	case "$iothub/methods/POST/#":
		return TopicMethodRequest, "", nil
	case "$iothub/streams/POST/#":
		return TopicStreamRequest, "", nil
	}
	rest, ok := strings.CutPrefix(filter, "devices/")
	if !ok {
		return TopicUnknown, "", fmt.Errorf("%w: filter %q", ErrBadTopic, filter)
	}
	id, rest, ok := strings.Cut(rest, "/")
	if !ok || id == "" || strings.ContainsAny(id, "+#") {
		return TopicUnknown, "", fmt.Errorf("%w: filter %q must name one device", ErrBadTopic, filter)
	}
	switch rest {
	case "messages/devicebound/#":
		return TopicDeviceBound, id, nil
	case "messages/events/#", "messages/events/":
		return TopicTelemetry, id, nil
	}
	return TopicUnknown, "", fmt.Errorf("%w: filter %q", ErrBadTopic, filter)
}

// ParsePropertyBag decodes an URL-encoded property bag (k=v&k2=v2; a key
// without "=" has an empty value). A trailing "/" is allowed.
func ParsePropertyBag(bag string) (map[string]string, error) {
	bag = strings.TrimSuffix(bag, "/")
	props := map[string]string{}
	if bag == "" {
		return props, nil
	}
	for _, part := range strings.Split(bag, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil || dk == "" {
			return nil, fmt.Errorf("%w: property bag key %q", ErrBadTopic, k)
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("%w: property bag value of %q", ErrBadTopic, dk)
		}
		props[dk] = dv
	}
	return props, nil
}

// EncodePropertyBag is the inverse of ParsePropertyBag, with keys sorted so
// the topic is deterministic.
func EncodePropertyBag(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(props[k]))
	}
	return b.String()
}

// Well-known system properties of the property bag.
const (
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropMessageID       = "$.mid"
	// PropComponent names the model component telemetry belongs to (IoT
	// Plug and Play).
	PropComponent = "$.sub"
)

// userProperties returns the bag without system properties (those starting "$").
func userProperties(props map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range props {
		if !strings.HasPrefix(k, "$") {
			out[k] = v
		}
	}
	return out
}
