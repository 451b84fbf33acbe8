package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestDashboardInChromium drives the embedded dashboard in a real headless
// Chromium: sign in, open a device, see a value change within a second of a
// real MQTT publish, acknowledge an alert, and save a screenshot.
func TestDashboardInChromium(t *testing.T) {
	chromium := testutil.RequireTool(t, "chromium")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/hq", `{"kind":"building"}`, 201)
	api.MustDo(t, "PUT", "/api/v1/entities/hq-lab", `{"kind":"room","parent":"hq"}`, 201)
	d := register(t, api, "thermo-1", `{"parent":"hq-lab"}`)
	api.MustDo(t, "PUT", "/api/v1/rules/too-hot", `{"scope":{"kind":"device"},"when":"telemetry.temperature > 40","then":[{"alert":{"severity":"major","message":"too hot"}}]}`, 201)
	dev := connectDevice(t, n, d)
	must(t, dev.Publish("devices/thermo-1/messages/events/", 1, false, `{"temperature":21.0,"humidity":40}`))

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	poll := func(what, expr string, opts ...chromedp.PollOption) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, opts...)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	run("sign in", chromedp.Navigate(n.URL()+"/"), chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", n.Token), chromedp.Click("#signin"),
		chromedp.WaitVisible(`[data-entity="thermo-1"]`))
	run("open the device", chromedp.Click(`[data-entity="thermo-1"]`), chromedp.WaitVisible(`[data-point="temperature"]`))
	if badge := text("#connection"); badge != "connected" {
		t.Fatalf("connection badge %q", badge)
	}
	if proto := text("#connection-protocol"); proto != "over mqtt" {
		t.Fatalf("connection protocol %q, want %q", proto, "over mqtt")
	}
	// Wait until the page's WebSocket subscription is live.
	poll("live", `document.querySelector("#ws-state").textContent === "live"`, chromedp.WithPollingTimeout(10*time.Second))
	time.Sleep(300 * time.Millisecond) // the entity subscription follows the live badge

	start := time.Now()
	must(t, dev.Publish("devices/thermo-1/messages/events/", 1, false, `{"temperature":23.75}`))
	poll("live value", `document.querySelector('[data-point="temperature"]').textContent === "23.75"`,
		chromedp.WithPollingTimeout(5*time.Second), chromedp.WithPollingInterval(10*time.Millisecond))
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the value took %v to show", took)
	}
	t.Logf("MQTT publish to value on screen: %v", time.Since(start))

	must(t, dev.Publish("devices/thermo-1/messages/events/", 1, false, `{"temperature":45.5}`))
	run("chart", chromedp.WaitVisible(`[data-chart="temperature"] canvas`))
	run("alert row", chromedp.Click("#show-alerts"), chromedp.WaitVisible(`[data-alert="too-hot/thermo-1"] button.ack`))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(testutil.RepoRoot(), "bin", "dashboard.png")
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err == nil {
		if err := os.WriteFile(shot, png, 0o644); err == nil {
			t.Logf("screenshot: %s", shot)
		}
	}
	// Clicked from the page's own script: the alert list re-renders on
	// live events, and a node found by chromedp.Click can be replaced
	// before the click reaches it ("Could not find node with given id").
	poll("acknowledge", `(() => { const b = document.querySelector('[data-alert="too-hot/thermo-1"] button.ack'); if (!b) return false; b.click(); return true })()`,
		chromedp.WithPollingTimeout(5*time.Second))
	testutil.Eventually(t, 5*time.Second, "alert acknowledged", func() bool {
		var a struct{ State string }
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/alerts/too-hot/thermo-1", nil, 200), &a)
		return a.State == "acknowledged"
	})
	poll("row shows acknowledged", `(document.querySelector('[data-alert="too-hot/thermo-1"]')||{}).dataset?.state === "acknowledged"`, chromedp.WithPollingTimeout(5*time.Second))
	run("rollup on the building", chromedp.Click(`[data-entity="hq"]`), chromedp.WaitVisible("#rollup .tile"))
	if rollup := text("#rollup"); !strings.Contains(rollup, "1/1") || !strings.Contains(rollup, "temperature avg") {
		t.Fatalf("building rollup on screen: %q", rollup)
	}
}
