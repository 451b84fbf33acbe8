package node

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

func TestDeadMembers(t *testing.T) {
	self := cluster.Member{Name: "n1", ID: "i1", State: cluster.StateAlive, Self: true, Kinds: []string{"device"}}
	alive := func(name, id string) cluster.Member {
		return cluster.Member{Name: name, ID: id, State: cluster.StateAlive, Kinds: []string{"device"}}
	}
	dead := func(name, id string) cluster.Member {
		return cluster.Member{Name: name, ID: id, State: cluster.StateDead, Kinds: []string{"device"}}
	}
	left := cluster.Member{Name: "n3", ID: "i3", State: cluster.StateLeft, Kinds: []string{"device"}}
	client := cluster.Member{Name: "c1", ID: "ic", State: cluster.StateDead}
	tests := []struct {
		name  string
		ms    []cluster.Member
		known int
		swept map[string]bool
		want  []string
	}{
		{"one dead of three", []cluster.Member{self, alive("n2", "i2"), dead("n3", "i3")}, 3, nil, []string{"n3"}},
		{"swept before", []cluster.Member{self, alive("n2", "i2"), dead("n3", "i3")}, 3, map[string]bool{"i3": true}, nil},
		{"a newer incarnation died", []cluster.Member{self, alive("n2", "i2"), dead("n3", "i3b")}, 3, map[string]bool{"i3": true}, []string{"n3"}},
		{"left gracefully", []cluster.Member{self, alive("n2", "i2"), left}, 3, nil, nil},
		{"minority side", []cluster.Member{self, dead("n2", "i2"), dead("n3", "i3")}, 3, nil, nil},
		{"minority of the known cluster", []cluster.Member{self, alive("n2", "i2"), dead("n3", "i3")}, 5, nil, nil},
		{"a client is no grain host", []cluster.Member{self, alive("n2", "i2"), client}, 3, nil, nil},
		{"alone", []cluster.Member{self}, 1, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, m := range deadMembers(tt.ms, tt.known, tt.swept) {
				got = append(got, m.Name)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("deadMembers = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDeadMemberSessionsSwept: a device connected to n3, which is then
// SIGKILLed and does not come back. The survivors mark the device
// disconnected and its building stops counting it, once memberlist
// declared n3 dead (issue 12, item 6), instead of for as long as n3 is away.
func TestDeadMemberSessionsSwept(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	n1 := ceStart(t, "n1", "n1", filepath.Join(dir, "n1"), "")
	n2 := ceStart(t, "n2", "n2", filepath.Join(dir, "n2"), n1.node.Addr("gossip"))
	n3 := ceStart(t, "n3", "n3", filepath.Join(dir, "n3"), n1.node.Addr("gossip"))
	all := []*cmember{n1, n2, n3}
	waitAlive(t, 30*time.Second, all)
	ceDo(t, 30*time.Second, all, "PUT", "/api/v1/entities/b1", map[string]any{"kind": "building"}, 200, 201)
	d := ceRegister(t, n1, "ds1", `{"parent":"b1"}`)
	cl, err := ceConnect(n3, d, token(t, d.ID, d.Primary, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(0)
	type view struct {
		Connection struct{ State, Node string }
		Rollup     map[string]any
	}
	read := func(m *cmember, id string) (view, bool) {
		var v view
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, _, out, err := m.api.Do(ctx, "GET", "/api/v1/twins/"+id, nil)
		return v, err == nil && st == 200 && json.Unmarshal(out, &v) == nil
	}
	testutil.Eventually(t, 15*time.Second, "ds1 connected on n3, counted by b1", func() bool {
		dv, ok1 := read(n1, "ds1")
		bv, ok2 := read(n1, "b1")
		return ok1 && ok2 && dv.Connection.State == "connected" && dv.Connection.Node == "n3" && bv.Rollup["connected"] == 1.0
	})
	if err := n3.node.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var last view
	testutil.Eventually(t, 45*time.Second, "ds1 disconnected and b1 counting 0 connected after n3's death", func() bool {
		dv, ok1 := read(n1, "ds1")
		bv, ok2 := read(n2, "b1")
		last = dv
		return ok1 && ok2 && dv.Connection.State == "disconnected" && bv.Rollup["connected"] == 0.0
	})
	t.Logf("ds1 marked disconnected %v after n3's SIGKILL (connection %+v)", time.Since(killed).Round(100*time.Millisecond), last.Connection)
}
