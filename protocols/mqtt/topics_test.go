package mqtt

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseTopic(t *testing.T) {
	cases := []struct {
		topic string
		want  Topic
		err   bool
	}{
		{"devices/d1/messages/events/", Topic{Kind: TopicTelemetry, DeviceID: "d1", Props: map[string]string{}}, false},
		{"devices/d1/messages/events", Topic{Kind: TopicTelemetry, DeviceID: "d1", Props: map[string]string{}}, false},
		{"devices/d1/messages/events/$.ct=application%2Fjson&$.ce=utf-8&k=v%20w", Topic{Kind: TopicTelemetry, DeviceID: "d1",
			Props: map[string]string{"$.ct": "application/json", "$.ce": "utf-8", "k": "v w"}}, false},
		{"devices/d1/messages/events/flag", Topic{Kind: TopicTelemetry, DeviceID: "d1", Props: map[string]string{"flag": ""}}, false},
		{"devices/d1/messages/devicebound/%24.mid=7", Topic{Kind: TopicDeviceBound, DeviceID: "d1", Props: map[string]string{"$.mid": "7"}}, false},
		{"$iothub/twin/GET/?$rid=42", Topic{Kind: TopicTwinGet, RID: "42", Props: map[string]string{"$rid": "42"}}, false},
		{"$iothub/twin/PATCH/properties/reported/?$rid=a1", Topic{Kind: TopicTwinPatchReported, RID: "a1", Props: map[string]string{"$rid": "a1"}}, false},
		{"$iothub/methods/res/200/?$rid=9", Topic{Kind: TopicMethodResponse, RID: "9", Status: 200, Props: map[string]string{"$rid": "9"}}, false},
		{"$iothub/streams/res/403/?$rid=7", Topic{Kind: TopicStreamResponse, RID: "7", Status: 403, Props: map[string]string{"$rid": "7"}}, false},
		{"$iothub/streams/res/20/?$rid=7", Topic{}, true},   // status out of range
		{"$iothub/twin/GET/", Topic{}, true},                // no $rid
		{"$iothub/methods/res/abc/?$rid=1", Topic{}, true},  // bad status
		{"$iothub/twin/res/200/?$rid=1", Topic{}, true},     // a response topic is not publishable
		{"devices//messages/events/", Topic{}, true},        // empty device
		{"devices/+/messages/events/", Topic{}, true},       // wildcard device
		{"devices/d1/messages/other/", Topic{}, true},       // unknown
		{"devices/d1/messages/events/%zz=1", Topic{}, true}, // bad escape
		{"other/d1", Topic{}, true},
		{"", Topic{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.topic, func(t *testing.T) {
			got, err := ParseTopic(tc.topic)
			if tc.err {
				if !errors.Is(err, ErrBadTopic) {
					t.Fatalf("err = %v, want ErrBadTopic", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseFilter(t *testing.T) {
	cases := []struct {
		filter string
		kind   TopicKind
		device string
		err    bool
	}{
		{"$iothub/twin/res/#", TopicTwinResponse, "", false},
		{"$iothub/twin/PATCH/properties/desired/#", TopicTwinDesired, "", false},
		{"$iothub/methods/POST/#", TopicMethodRequest, "", false},
		{"$iothub/streams/POST/#", TopicStreamRequest, "", false},
		{"devices/d1/messages/devicebound/#", TopicDeviceBound, "d1", false},
		{"devices/d1/messages/events/#", TopicTelemetry, "d1", false},
		{"devices/+/messages/devicebound/#", 0, "", true},
		{"#", 0, "", true},
		{"$iothub/#", 0, "", true},
		{"devices/d1/#", 0, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.filter, func(t *testing.T) {
			k, d, err := ParseFilter(tc.filter)
			if (err != nil) != tc.err || k != tc.kind || d != tc.device {
				t.Fatalf("got %v %q %v", k, d, err)
			}
		})
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"devices/d1/messages/events/$.ct=a&b=c", "$iothub/twin/GET/?$rid=1",
		"$iothub/methods/res/200/?$rid=1", "$iothub/streams/res/403/?$rid=9", "devices/d/messages/devicebound/%", "$iothub/twin/PATCH/properties/reported/?$rid=&x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		tp, err := ParseTopic(topic)
		if err != nil {
			if !errors.Is(err, ErrBadTopic) {
				t.Fatalf("error %v does not wrap ErrBadTopic", err)
			}
			return
		}
		switch tp.Kind {
		case TopicTelemetry, TopicDeviceBound:
			if tp.DeviceID == "" {
				t.Fatalf("%q: device topic without device", topic)
			}
		case TopicTwinGet, TopicTwinPatchReported, TopicMethodResponse, TopicStreamResponse:
			if tp.RID == "" {
				t.Fatalf("%q: $iothub topic without $rid", topic)
			}
		default:
			t.Fatalf("%q: parsed to kind %v", topic, tp.Kind)
		}
		_, _, _ = ParseFilter(topic)
	})
}

func FuzzPropertyBag(f *testing.F) {
	for _, s := range []string{"", "a=b", "$.ct=application%2Fjson&x", "a=%zz", "&&=", "k=v&k=w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, bag string) {
		props, err := ParsePropertyBag(bag)
		if err != nil {
			if !errors.Is(err, ErrBadTopic) {
				t.Fatalf("error %v does not wrap ErrBadTopic", err)
			}
			return
		}
		// Encoding and parsing again must give the same map.
		again, err := ParsePropertyBag(EncodePropertyBag(props))
		if err != nil || !reflect.DeepEqual(again, props) {
			t.Fatalf("round trip of %q: %v → %v (%v)", bag, props, again, err)
		}
	})
}
