package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestReadmeCoAPCommands runs the README's coap-client-openssl commands, as
// they are written, against a node (only the addresses and the data folder
// are the test's own), and checks what they did.
func TestReadmeCoAPCommands(t *testing.T) {
	for _, tool := range []string{"coap-client-openssl", "curl", "bash", "sed"} {
		testutil.RequireTool(t, tool)
	}
	data := t.TempDir()
	n := testutil.Start(t, data, "--coaps", "127.0.0.1:0")
	api := n.Client()
	register(t, api, "thermo-1", "")
	script := strings.NewReplacer("127.0.0.1:5683", n.Addr("coap"), "127.0.0.1:5684", n.Addr("coaps"),
		"localhost:8080", n.Addr("http"), "--data ./data", "--data "+data).Replace(readmeBlock(t, "checked by TestReadmeCoAPCommands"))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "H=Authorization: Bearer "+n.Token,
		"PATH="+filepath.Dir(testutil.Binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s\n--- script:\n%s\n--- node:\n%s", err, out, script, n.Logs())
	}
	for _, want := range []string{`{"$version":1}`, `"firmware":"1.0.0"`, `"setpoint":22`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	tw := coapTwinOf(t, api, "thermo-1")
	if tw.Telemetry["temperature"]["value"] != 21.7 || tw.Telemetry["humidity"]["value"] != 41.0 {
		t.Errorf("telemetry in the twin: %v", tw.Telemetry)
	}
	if tw.Reported["firmware"] != "1.0.0" || tw.Connection.Protocol != "coaps" {
		t.Errorf("reported %v, connection %+v", tw.Reported, tw.Connection)
	}
	if inbox := string(api.MustDo(t, "GET", "/api/v1/devices/thermo-1/messages", nil, 200)); !strings.Contains(inbox, `"state":"delivered"`) {
		t.Errorf("the message was not completed: %s", inbox)
	}
	t.Logf("output of the README's commands:\n%s", out)
}
