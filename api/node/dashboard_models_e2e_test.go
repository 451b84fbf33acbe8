package node

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestDashboardModelledDevice drives the dashboard in headless Chromium on
// a device with a DTDL model: display names and units on telemetry and
// properties, typed inputs for writable properties (a select for an enum,
// a switch for a boolean, a number field), a command form, the server's
// refusal shown in the page, and a validation event shown live.
func TestDashboardModelledDevice(t *testing.T) {
	chromium := testutil.RequireTool(t, "chromium")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	model, err := os.ReadFile("../../actors/dtdl/testdata/thermostat-v3.json")
	if err != nil {
		t.Fatal(err)
	}
	api.MustDo(t, "PUT", "/api/v1/models/"+url.PathEscape(thermostatModel), model, 201)
	d := register(t, api, "th-1", `{"modelId":"`+thermostatModel+`"}`)
	dev := connectDevice(t, n, d)
	must(t, dev.Subscribe("$iothub/methods/POST/#", 1, func(c paho.Client, m paho.Message) {
		go func() {
			_, query, _ := strings.Cut(m.Topic(), "?")
			q, _ := url.ParseQuery(query)
			c.Publish("$iothub/methods/res/200/?$rid="+q.Get("$rid"), 1, false, `{"echo":`+string(m.Payload())+`}`).WaitTimeout(5 * time.Second)
		}()
	}))
	must(t, dev.Publish("devices/th-1/messages/events/", 1, false, `{"temperature":21.5}`))
	must(t, dev.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"serialNumber":"SN-7","targetTemperature":{"value":20,"ac":200,"av":1}}`))
	testutil.Eventually(t, 5*time.Second, "reported", func() bool { return twinOf(t, api, "th-1").Reported["serialNumber"] == "SN-7" })

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
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	run("sign in", chromedp.Navigate(n.URL()+"/"), chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", n.Token), chromedp.Click("#signin"), chromedp.WaitVisible(`[data-entity="th-1"]`))
	run("open the device", chromedp.Click(`[data-entity="th-1"]`), chromedp.WaitVisible(`#model-box [data-prop="serialNumber"]`))

	// Names and units from the model.
	if got := eval(`document.querySelector('#model-name').textContent`); got != "Thermostat" {
		t.Fatalf("model name %q", got)
	}
	poll("telemetry unit", `(document.querySelector('[data-unit="temperature"]')||{}).textContent === "°C"`)
	if got := eval(`document.querySelector('[data-point="temperature"]').previousElementSibling.textContent`); got != "Temperature" {
		t.Fatalf("telemetry label %q", got)
	}
	poll("chart caption", `(document.querySelector('[data-chart="temperature"] figcaption')||{}).textContent === "Temperature (°C)"`)
	if got := text(`[data-prop="targetTemperature"]`); got != "20 °C" {
		t.Fatalf("reported target temperature %q (the acknowledgement's value, with its unit)", got)
	}
	// Typed inputs: an enum select, a boolean switch, a number field, and
	// no input for a read-only property.
	if got := eval(`[...document.querySelectorAll('#prop-mode option')].map(o => o.textContent).join(",")`); got != "Off,Heat,Eco" {
		t.Fatalf("mode options %q", got)
	}
	if got := eval(`(() => { const e = document.querySelector('#prop-enabled'); return e.type + "/" + e.getAttribute("role") })()`); got != "checkbox/switch" {
		t.Fatalf("enabled input %q", got)
	}
	if got := eval(`document.querySelector('#prop-targetTemperature').type + "/" + document.querySelector('#prop-targetTemperature').step`); got != "number/any" {
		t.Fatalf("target temperature input %q", got)
	}
	if got := eval(`String(document.querySelector('#prop-serialNumber'))`); got != "null" {
		t.Fatalf("a read-only property has an input: %s", got)
	}
	run("set the mode", chromedp.SetValue("#prop-mode", `"eco"`), chromedp.Click(`[data-set="mode"]`))
	poll("mode set", `document.querySelector('#model-result').textContent.startsWith("Mode set to")`)
	run("switch on", chromedp.Click("#prop-enabled"), chromedp.Click(`[data-set="enabled"]`))
	poll("enabled set", `document.querySelector('#model-result').textContent.startsWith("Enabled set to true")`)
	desired := twinOf(t, api, "th-1").Desired
	if desired["mode"] != "eco" || desired["enabled"] != true {
		t.Fatalf("desired after the inputs: %v", desired)
	}

	// Commands: a button per command, a request form; the server's refusal
	// shows, a valid request reaches the device.
	run("open the command", chromedp.Click(`[data-command="getMaxMinReport"]`), chromedp.WaitVisible("#command-request"))
	run("bad request", chromedp.SendKeys("#command-request", "yesterday"), chromedp.Click("#command-send"))
	poll("refusal shown", `document.querySelector('#command-result').textContent.includes("want a dateTime")`)
	run("reboot", chromedp.Click(`[data-command="reboot"]`), chromedp.WaitVisible("#command-request"),
		chromedp.SendKeys("#command-request", "3"), chromedp.Click("#command-send"))
	poll("reboot answered", `document.querySelector('#command-result').textContent === 'status 200: {"echo":3}'`)

	// A refused message shows live, with its reason.
	must(t, dev.Publish("devices/th-1/messages/events/", 0, false, `{"temperature":"hot"}`))
	poll("validation event", `document.querySelector('#validation-note').textContent.includes("$.temperature: want double")`)
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		shot := filepath.Join(testutil.RepoRoot(), "bin", "dashboard-model.png")
		if os.MkdirAll(filepath.Dir(shot), 0o755) == nil && os.WriteFile(shot, png, 0o644) == nil {
			t.Logf("screenshot: %s", shot)
		}
	}
	var tw struct{ Telemetry map[string]map[string]any }
	_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/th-1", nil, 200), &tw)
	if tw.Telemetry["temperature"]["value"] != 21.5 {
		t.Fatalf("refused telemetry stored: %v", tw.Telemetry)
	}
}
