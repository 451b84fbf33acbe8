package twin_test

import (
	"fmt"
	"testing"

	"github.com/twinmesh/twinmesh/actors/twin"
)

// benchTwin returns a twin with about 30 desired and 30 reported properties,
// some of them nested, plus telemetry.
func benchTwin(b *testing.B) *twin.Twin {
	b.Helper()
	tw := twin.New("dev-1", "device")
	p := "{"
	for i := range 30 {
		if i > 0 {
			p += ","
		}
		switch i % 3 {
		case 0:
			p += fmt.Sprintf(`"p%d":%d.5`, i, i)
		case 1:
			p += fmt.Sprintf(`"p%d":"value-%d"`, i, i)
		default:
			p += fmt.Sprintf(`"p%d":{"a":%d,"b":true,"c":[1,2,3]}`, i, i)
		}
	}
	p += "}"
	for _, s := range []twin.Section{twin.Desired, twin.Reported} {
		if _, err := tw.Patch(s, []byte(p), t0, lim); err != nil {
			b.Fatal(err)
		}
	}
	tw.SetTelemetry(map[string]any{"temp": 21.5, "hum": 40.0, "on": true}, t0)
	return tw
}

func BenchmarkPatch(b *testing.B) {
	tw := benchTwin(b)
	patches := [][]byte{
		[]byte(`{"p0":1,"p1":"x","p2":{"a":7},"p3":2.5,"new":"n"}`),
		[]byte(`{"p0":2,"p1":"y","p2":{"a":8},"p3":3.5,"new":null}`),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c, err := tw.Patch(twin.Reported, patches[i%2], t1, lim)
		if err != nil || c.Noop {
			b.Fatal(err, c.Noop)
		}
		i++
	}
}

func BenchmarkMarshal(b *testing.B) {
	tw := benchTwin(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tw.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClonePatch(b *testing.B) {
	tw := benchTwin(b)
	patches := [][]byte{
		[]byte(`{"p0":1,"p1":"x","p2":{"a":7},"p3":2.5,"new":"n"}`),
		[]byte(`{"p0":2,"p1":"y","p2":{"a":8},"p3":3.5,"new":null}`),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		next := tw.Clone()
		if _, err := next.Patch(twin.Reported, patches[i%2], t1, lim); err != nil {
			b.Fatal(err)
		}
		tw = next
		i++
	}
}
