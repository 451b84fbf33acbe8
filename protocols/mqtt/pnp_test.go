package mqtt

import (
	"errors"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

func TestModelID(t *testing.T) {
	cases := []struct{ name, user, want string }{
		{"azure sdk, unescaped", "hub/d1/?api-version=2020-09-30&DeviceClientType=x&model-id=dtmi:com:example:Thermostat;1", "dtmi:com:example:Thermostat;1"},
		{"escaped", "hub/d1/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1", "dtmi:com:example:Thermostat;1"},
		{"first", "hub/d1/?model-id=dtmi:a:b;1&api-version=2021-04-12", "dtmi:a:b;1"},
		{"none", "hub/d1/?api-version=2021-04-12", ""},
		{"no query", "hub/d1/", ""},
		{"bad escape kept raw", "hub/d1/?model-id=dtmi:a%zz", "dtmi:a%zz"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ModelID(c.user); got != c.want {
				t.Fatalf("ModelID(%q) = %q, want %q", c.user, got, c.want)
			}
		})
	}
}

func TestReasonString(t *testing.T) {
	long := strings.Repeat("é", maxReasonString)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"validation", errcode.New(errcode.BadRequest, "telemetry does not match model m: $.t: want double"), "telemetry does not match model m: $.t: want double"},
		{"internal keeps the code's name", errcode.Wrap(errcode.Internal, errors.New("disk on fire")), packets.ErrUnspecifiedError.Reason},
		{"bounded, valid UTF-8", errcode.New(errcode.BadRequest, "%s", long), long[:maxReasonString]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, code := reply(c.err)
			if got := reasonString(c.err, code); got != c.want {
				t.Fatalf("reasonString = %q, want %q", got, c.want)
			}
		})
	}
}
