package twin_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/twinmesh/twinmesh/actors/twin"
)

func Example() {
	tw := twin.New("dev-1", "device")
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

	c, err := tw.Patch(twin.Desired, []byte(`{"fan":"on","target":{"temp":21}}`), now, twin.DefaultLimits())
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Section, c.Version, c.SectionVersion, string(c.Data))

	c, _ = tw.Patch(twin.Reported, []byte(`{"fan":"on","target":{"temp":19}}`), now, twin.DefaultLimits())
	fmt.Println(c.Section, c.Version, c.SectionVersion, string(c.Data))
	fmt.Println("delta:", tw.Delta())

	c, _ = tw.Patch(twin.Reported, []byte(`{"fan":"on"}`), now, twin.DefaultLimits())
	fmt.Println("noop:", c.Noop, c.Version)

	_, err = tw.Patch(twin.Reported, []byte(`{"$version":9}`), now, twin.DefaultLimits())
	fmt.Println(err)
	// Output:
	// desired 1 1 {"fan":"on","target":{"temp":21}}
	// reported 2 1 {"fan":"on","target":{"temp":19}}
	// delta: map[target:map[temp:21]]
	// noop: true 2
	// twin: reserved key: reported patch sets "$version"
}

// Live state (telemetry, connection, rollup, alerts) does not move the
// version, so an ETag read before it still matches; a patch or a change of
// the entity's attributes adds one.
func Example_versions() {
	tw := twin.New("dev-1", "device")
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tw.Patch(twin.Desired, []byte(`{"fan":"on"}`), now, twin.DefaultLimits())
	etag := tw.Version()

	tw.SetTelemetry(map[string]any{"temp": 21.5}, now.Add(time.Second))
	tw.SetConnection(twin.Connection{State: "connected", Since: now.Add(time.Second)})
	c := tw.SetAlerts(json.RawMessage(`[{"id":"a1"}]`), now.Add(time.Second))
	fmt.Println(c.Section, c.Version, tw.Version() == etag, tw.AlertsUpdated().Format(time.RFC3339))

	c = tw.AttributesChanged(now.Add(2 * time.Second))
	fmt.Println(c.Section, c.Version)
	// Output:
	// alerts 1 true 2025-01-02T03:04:06Z
	// attributes 2
}
