package dtdl

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	th := mustParse(t, "thermostat-v3.json")
	sensor := mustParse(t, "spec-schemas.json")
	coffee := mustParse(t, "spec-command.json")
	type check func(*Interface, string) error
	telemetry := func(i *Interface, p string) error { return i.ValidateTelemetry("", []byte(p)) }
	reported := func(i *Interface, p string) error { return i.ValidateReported([]byte(p)) }
	desired := func(i *Interface, p string) error { return i.ValidateDesired([]byte(p)) }
	command := func(name string) check {
		return func(i *Interface, p string) error { return i.ValidateCommand(name, []byte(p)) }
	}
	cases := []struct {
		name    string
		in      *Interface
		fn      check
		payload string
		want    string // "" = valid; else "<path>: <part of the message>"
	}{
		{"telemetry ok", th, telemetry, `{"temperature":21.5,"state":"idle"}`, ""},
		{"telemetry integer as double", th, telemetry, `{"temperature":21}`, ""},
		{"telemetry wrong type", th, telemetry, `{"temperature":"hot"}`, `$.temperature: want double, got the string "hot"`},
		{"telemetry unknown", th, telemetry, `{"humidity":3}`, `$.humidity: "humidity" is not telemetry of dtmi:twinmesh:example:Thermostat;1; its telemetry: temperature, state`},
		{"telemetry is a property", th, telemetry, `{"targetTemperature":3}`, `$.targetTemperature: "targetTemperature" is a property`},
		{"telemetry enum", th, telemetry, `{"state":"cooling"}`, `$.state: want one of "idle", "heating", got the string "cooling"`},
		{"telemetry null", th, telemetry, `{"temperature":null}`, `$.temperature: want double, got null`},
		{"telemetry not an object", th, telemetry, `21.5`, `$: telemetry of a modelled device is a JSON object, not the number 21.5`},
		{"telemetry not json", th, telemetry, `hot`, `$: telemetry of a modelled device is not JSON`},
		{"object ok", sensor, telemetry, `{"accelerometer1":{"x":1,"y":2,"z":3.5}}`, ""},
		{"object unknown field", sensor, telemetry, `{"accelerometer1":{"x":1,"w":2}}`, `$.accelerometer1.w: the object has no field "w"; its fields: x, y, z`},
		{"array element", sensor, telemetry, `{"ledState":[true,false,1]}`, `$.ledState[2]: want boolean, got the number 1`},
		{"integer enum", sensor, telemetry, `{"state":2}`, ""},
		{"integer enum wrong", sensor, telemetry, `{"state":3}`, `$.state: want one of 1, 2, got the number 3`},
		{"schema by dtmi", sensor, telemetry, `{"telemetry1":[1.5,"x"]}`, `$.telemetry1[1]: want double`},
		{"reported ok", th, reported, `{"serialNumber":"A1","targetTemperature":20}`, ""},
		{"reported ack", th, reported, `{"targetTemperature":{"value":22,"ac":200,"av":3,"ad":"done"}}`, ""},
		{"reported ack bad value", th, reported, `{"targetTemperature":{"value":"x","ac":200,"av":3}}`, `$.targetTemperature.value: want double`},
		{"reported ack bad code", th, reported, `{"mode":{"value":"eco","ac":"ok"}}`, `$.mode.ac: an integer`},
		{"reported delete", th, reported, `{"serialNumber":null}`, ""},
		{"reported wrong type", th, reported, `{"enabled":"yes"}`, `$.enabled: want boolean, got the string "yes"`},
		{"reported unknown", th, reported, `{"colour":"red"}`, `$.colour: "colour" is not a property of dtmi:twinmesh:example:Thermostat;1; its properties: targetTemperature, mode, enabled, serialNumber`},
		{"reported telemetry", th, reported, `{"temperature":3}`, `$.temperature: "temperature" is telemetry`},
		{"map ok", sensor, reported, `{"modules":{"a":"on","b":null}}`, ""},
		{"map value", sensor, reported, `{"modules":{"a":1}}`, `$.modules.a: want string`},
		{"desired ok", th, desired, `{"targetTemperature":19.5,"mode":"eco","enabled":false}`, ""},
		{"desired read-only", th, desired, `{"serialNumber":"x"}`, `$.serialNumber: property "serialNumber" of dtmi:twinmesh:example:Thermostat;1 is read-only`},
		{"desired enum", th, desired, `{"mode":"cool"}`, `$.mode: want one of "off", "heat", "eco", got the string "cool"`},
		{"desired not an object", th, desired, `[1]`, `$: a desired patch is a JSON object, not an array`},
		{"command ok", th, command("getMaxMinReport"), `"2024-01-02T03:04:05Z"`, ""},
		{"command bad request", th, command("getMaxMinReport"), `"yesterday"`, `$: want a dateTime (RFC 3339, 2006-01-02T15:04:05Z), got the string "yesterday"`},
		{"command missing request", th, command("getMaxMinReport"), ``, `$: command "getMaxMinReport" needs its request "since" (dateTime)`},
		{"command nullable", th, command("reboot"), `null`, ""},
		{"command integer", th, command("reboot"), `5`, ""},
		{"command not integer", th, command("reboot"), `5.5`, `$: want integer, got 5.5`},
		{"command unknown", th, command("selfDestruct"), `{}`, `$: "selfDestruct" is not a command of dtmi:twinmesh:example:Thermostat;1; its commands: reboot, getMaxMinReport`},
		{"command spec", coffee, command("startBrewing"), `"espresso"`, ""},
		{"command unknown component", coffee, command("grinder*start"), `{}`, `$: dtmi:com:example:CoffeeMaker;1 has no component "grinder"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.fn(c.in, c.payload)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrMismatch) || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("got  %v\nwant %s…", err, c.want)
			}
		})
	}
}

func TestPrimitives(t *testing.T) {
	cases := []struct {
		kind Kind
		ok   []string
		bad  []string
	}{
		{Integer, []string{`0`, `-2147483648`, `2147483647`}, []string{`2147483648`, `1.5`, `1e3`, `"1"`}},
		{Long, []string{`9223372036854775807`}, []string{`9223372036854775808`}},
		{Short, []string{`-32768`}, []string{`32768`}},
		{Byte, []string{`127`}, []string{`128`}},
		{UnsignedByte, []string{`255`}, []string{`256`, `-1`}},
		{UnsignedInteger, []string{`4294967295`}, []string{`4294967296`}},
		{UnsignedLong, []string{`18446744073709551615`}, []string{`-1`}},
		{UnsignedShort, []string{`65535`}, []string{`65536`}},
		{Double, []string{`1`, `-1.5e300`}, []string{`1e999`, `true`}},
		{Float, []string{`3.4e38`}, []string{`3.5e38`}},
		{Decimal, []string{`1.25`}, []string{`"1.25"`}},
		{Boolean, []string{`true`, `false`}, []string{`0`, `"true"`}},
		{String, []string{`""`, `"x"`}, []string{`1`}},
		{Date, []string{`"2024-02-29"`}, []string{`"2023-02-29"`, `"2024-02-29T00:00:00Z"`}},
		{DateTime, []string{`"2024-02-29T10:00:00Z"`, `"2024-02-29T10:00:00.5+02:00"`}, []string{`"2024-02-29"`, `"now"`}},
		{Time, []string{`"10:00:00"`, `"23:59:59.123Z"`, `"10:00:00+01:00"`}, []string{`"25:00:00"`, `"10:00"`}},
		{Duration, []string{`"P1D"`, `"PT5M"`, `"P1Y2M3DT4H5M6.5S"`, `"P2W"`}, []string{`"P"`, `"PT"`, `"P1H"`, `"5M"`, `"PT1S2M"`, `"P1.D"`}},
		{UUID, []string{`"123e4567-e89b-12d3-a456-426614174000"`}, []string{`"123e4567e89b12d3a456426614174000"`}},
		{Bytes, []string{`"aGVsbG8="`}, []string{`"a%b"`}},
	}
	for _, c := range cases {
		t.Run(string(c.kind), func(t *testing.T) {
			doc := `{"@context":"dtmi:dtdl:context;3","@id":"dtmi:x:p;1","@type":"Interface","contents":[{"@type":"Telemetry","name":"v","schema":"` + string(c.kind) + `"}]}`
			in, err := Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range c.ok {
				if err := in.ValidateTelemetry("", []byte(`{"v":`+v+`}`)); err != nil {
					t.Errorf("%s: %v", v, err)
				}
			}
			for _, v := range c.bad {
				if err := in.ValidateTelemetry("", []byte(`{"v":`+v+`}`)); !errors.Is(err, ErrMismatch) {
					t.Errorf("%s accepted as %s", v, c.kind)
				}
			}
		})
	}
}

func TestComponentTelemetry(t *testing.T) {
	phone := mustParse(t, "spec-component-phone.json")
	camera := mustParse(t, "spec-component-camera.json")
	phone.Link(func(string) *Interface { return camera })
	if err := phone.ValidateTelemetry("frontCamera", []byte(`{"frames":30}`)); err != nil {
		t.Fatal(err)
	}
	if err := phone.ValidateTelemetry("frontCamera", []byte(`{"frames":"many"}`)); err == nil || !strings.HasPrefix(err.Error(), "$.frames: want integer") {
		t.Fatal(err)
	}
	if err := phone.ValidateTelemetry("sideCamera", []byte(`{"frames":1}`)); err == nil || !strings.Contains(err.Error(), `no component "sideCamera"`) {
		t.Fatal(err)
	}
	if err := phone.ValidateReported([]byte(`{"backCamera":{"__t":"x"}}`)); err == nil || !strings.HasPrefix(err.Error(), `$.backCamera.__t: the component marker`) {
		t.Fatal(err)
	}
}
