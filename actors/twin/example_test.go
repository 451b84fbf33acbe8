package twin_test

import (
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
