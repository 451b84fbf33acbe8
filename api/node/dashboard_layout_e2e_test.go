package node

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// Colours of the stylesheet the pixel checks expect.
const (
	pageBackground = "#f4f6f8"
	sevNone        = "#dcfce7"
	sevMinor       = "#fed7aa"
	sevCritical    = "#7f1d1d"
	stepLowest     = "#1e40af"
	stepHighest    = "#b91c1c"
	chartLine      = "#1d4ed8"
)

// TestDashboardLayoutInChromium drives the dashboard through the states a
// new user meets (issue 18) and checks each screenshot where the layout
// puts things: before sign-in only the sign-in card; the tree right before
// anything is clicked; the building/room grid coloured by alert severity,
// then by a point; a device with charts of its history and live values; a
// building without a "disconnected" badge; the alerts with filters, a
// timeline and acknowledge; keyboard use and contrast.
func TestDashboardLayoutInChromium(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	for _, b := range []string{"hq", "annex"} {
		api.MustDo(t, "PUT", "/api/v1/entities/"+b, `{"kind":"building"}`, 201)
	}
	for _, r := range []string{"hq-lab", "hq-lobby", "hq-office"} {
		api.MustDo(t, "PUT", "/api/v1/entities/"+r, `{"kind":"room","parent":"hq"}`, 201)
	}
	api.MustDo(t, "PUT", "/api/v1/entities/annex-store", `{"kind":"room","parent":"annex"}`, 201)
	devs := map[string]device{}
	for d, room := range map[string]string{"t-lab": "hq-lab", "t-lobby": "hq-lobby", "t-office": "hq-office", "t-store": "annex-store"} {
		devs[d] = register(t, api, d, `{"parent":"`+room+`"}`)
	}
	api.MustDo(t, "PUT", "/api/v1/rules/too-hot", `{"scope":{"kind":"device"},"when":"telemetry.temperature > 28","then":[{"alert":{"severity":"critical","message":"too hot"}}]}`, 201)
	api.MustDo(t, "PUT", "/api/v1/rules/warm", `{"scope":{"kind":"device"},"when":"telemetry.temperature > 24","then":[{"alert":{"severity":"minor","message":"warm"}}]}`, 201)
	lab := connectDevice(t, n, devs["t-lab"])
	for i, v := range []float64{21, 22, 23, 24, 25} { // history: five messages before the page opens
		must(t, lab.Publish("devices/t-lab/messages/events/", 1, false, fmt.Sprintf(`{"temperature":%v,"humidity":%d}`, v, 40+i)))
	}
	office := connectDevice(t, n, devs["t-office"])
	must(t, office.Publish("devices/t-office/messages/events/", 1, false, `{"temperature":19}`))
	lobby := connectDevice(t, n, devs["t-lobby"])
	must(t, lobby.Publish("devices/t-lobby/messages/events/", 1, false, `{"temperature":30}`))
	lobby.Disconnect(50) // t-lobby: disconnected, with a critical alert
	store := connectDevice(t, n, devs["t-store"])
	must(t, store.Publish("devices/t-store/messages/events/", 1, false, `{"temperature":25}`))
	store.Disconnect(50)
	testutil.Eventually(t, 10*time.Second, "rollups of hq", func() bool {
		var tw struct{ Rollup map[string]any }
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/hq", nil, 200), &tw)
		return tw.Rollup["connected"] == 2.0 && tw.Rollup["worstSeverity"] == "critical"
	})

	p := newPage(t)
	// 1. Before sign-in: the sign-in card alone, centred; nothing around it.
	p.run("open", chromedp.Navigate(n.URL()+"/"), chromedp.WaitVisible("#token"))
	img := p.shot("dashboard-1-signed-out")
	for _, sel := range []string{"#nav", "#app", "#search-box", "#alert-count", "#ws-state", "#signout", "#tree-pane"} {
		if b := p.box(sel); !b.empty() {
			t.Errorf("before sign-in, %s is shown at %v", sel, b)
		}
	}
	card, head := p.box("#signin-view"), p.box("header")
	if math.Abs(card.X+card.W/2-viewportW/2) > 2 || card.W < 380 || card.Y < head.bottom()+40 {
		t.Errorf("sign-in card at %v, header %v", card, head)
	}
	regionIs(t, img, "left of the sign-in card", rect{10, head.bottom() + 10, card.X - 20, 700}, pageBackground)
	regionIs(t, img, "right of the sign-in card", rect{card.right() + 10, head.bottom() + 10, viewportW - card.right() - 20, 700}, pageBackground)
	regionIs(t, img, "below the sign-in card", rect{10, card.bottom() + 10, viewportW - 20, viewportH - card.bottom() - 20}, pageBackground)

	// 2. Signed in: the tree knows who is connected before anything is
	// clicked; buildings and rooms show counts, never "disconnected".
	p.run("sign in", chromedp.SendKeys("#token", n.Token), chromedp.Click("#signin"), chromedp.WaitVisible(`[data-cell="hq-lobby"]`))
	p.poll("tree dots", `document.querySelector('[data-item="t-lab"] .dot.connected') && document.querySelector('[data-item="t-lobby"] .dot.disconnected')`, 5*time.Second)
	p.truth("hq counts its devices", `document.querySelector('[data-ratio="hq"]').textContent === "2/3"`)
	p.truth("no building or room says disconnected",
		`![...document.querySelectorAll('[data-item="hq"] > .item, [data-item="hq-lab"] > .item, [data-item="annex"] > .item')].some(e => /disconnected/.test(e.textContent) || e.querySelector('.dot'))`)
	p.poll("grid coloured", `document.querySelector('[data-cell="hq-lobby"]').dataset.class === "sev-critical"`, 5*time.Second)
	img = p.shot("dashboard-2-overview")
	tree, content, overview := p.box("#tree-pane"), p.box("#content"), p.box("#overview-view")
	if tree.X > 20 || tree.W < 280 || tree.W > 320 || content.X < tree.right()+8 || tree.overlaps(content) || tree.Y < head.bottom() {
		t.Errorf("tree %v and content %v do not sit side by side under the header %v", tree, content, head)
	}
	cells := p.boxes("[data-cell]", "data-cell")
	if len(cells) != 4 {
		t.Fatalf("grid cells %v", cells)
	}
	for id, c := range cells {
		if !c.inside(overview) || c.W < 120 || c.H < 60 {
			t.Errorf("cell %s at %v, outside the overview %v or too small", id, c, overview)
		}
		for other, o := range cells {
			if other != id && c.overlaps(o) {
				t.Errorf("cells %s %v and %s %v overlap", id, c, other, o)
			}
		}
	}
	for id, want := range map[string]string{"hq-lobby": sevCritical, "hq-lab": sevMinor, "hq-office": sevNone, "annex-store": sevMinor} {
		c := cells[id]
		pixelIs(t, img, "cell "+id+" by severity", c.X+4, c.Y+c.H-4, want)
	}

	// 3. The same grid coloured by temperature: coldest to warmest.
	p.choose("colour by temperature", "#grid-by", "temperature")
	p.poll("grid by temperature", `document.querySelector('[data-cell="hq-office"]').dataset.class === "step-0"`, 5*time.Second)
	img = p.shot("dashboard-3-by-temperature")
	cells = p.boxes("[data-cell]", "data-cell")
	pixelIs(t, img, "coldest room", cells["hq-office"].X+4, cells["hq-office"].Y+cells["hq-office"].H-4, stepLowest)
	pixelIs(t, img, "warmest room", cells["hq-lobby"].X+4, cells["hq-lobby"].Y+cells["hq-lobby"].H-4, stepHighest)

	// 4. Search and keyboard: find a device, then walk the tree with keys.
	p.run("search", chromedp.Click("#search"), chromedp.SendKeys("#search", "t-la"), chromedp.WaitVisible(`[data-result="t-lab"]`),
		chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(`[data-chart="temperature"] canvas`))
	p.truth("device opened", `document.querySelector('#entity-title').textContent === "t-lab" && document.activeElement.dataset.item === "t-lab"`)
	p.run("arrow up, enter", chromedp.KeyEvent(kb.ArrowUp), chromedp.KeyEvent(kb.Enter))
	p.poll("room opened by keyboard", `document.querySelector('#entity-title').textContent === "hq-lab"`, 5*time.Second)
	p.run("arrow down, enter", chromedp.KeyEvent(kb.ArrowDown), chromedp.KeyEvent(kb.Enter))
	p.poll("device opened again", `document.querySelector('#entity-title').textContent === "t-lab" && window.TM.chartInfo("temperature")`, 5*time.Second)

	// 5. The device: charts of the last hour from the warm store, with a
	// time axis, and live values appended.
	var points, span float64
	p.eval(`TM.chartInfo("temperature").points`, &points)
	p.eval(`TM.chartInfo("temperature").span`, &span)
	if points != 5 || span < 3500 || span > 3700 {
		t.Errorf("temperature chart: %v points over %v s, want the 5 of history over the last hour", points, span)
	}
	p.truth("connected badge", `document.querySelector('#connection').textContent === "connected"`)
	p.poll("live", `document.querySelector("#ws-state").textContent === "live"`, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // the entity subscription follows the live badge
	must(t, lab.Publish("devices/t-lab/messages/events/", 1, false, `{"temperature":26.5}`))
	p.poll("live point appended", `TM.chartInfo("temperature").points === 6 && TM.chartInfo("temperature").last === 26.5`, 5*time.Second)
	img = p.shot("dashboard-4-device")
	view, chart := p.box("#entity-view"), p.box(`[data-chart="temperature"] canvas`)
	if !chart.inside(view) || chart.W < 280 || chart.H < 120 {
		t.Errorf("temperature chart %v in the entity view %v", chart, view)
	}
	figures := p.boxes("[data-chart]", "data-chart")
	if len(figures) != 2 {
		t.Errorf("charts %v, want humidity and temperature", figures)
	}
	for name, f := range figures {
		inner := p.box(fmt.Sprintf(`[data-chart=%q] .uplot`, name))
		if !f.inside(view) || !inner.inside(f) || inner.W < f.W-40 {
			t.Errorf("chart %s: plot %v does not fill its card %v inside %v", name, inner, f, view)
		}
		for other, o := range figures {
			if other != name && f.overlaps(o) {
				t.Errorf("charts %s %v and %s %v overlap", name, f, other, o)
			}
		}
	}
	if n := countNear(img, chart, chartLine, 60); n < 40 {
		t.Errorf("temperature chart: %d pixels of the line colour, no line drawn", n)
	}
	p.choose("range: 15 minutes", "#range", "900")
	p.poll("15 minute axis", `TM.chartInfo("temperature") && TM.chartInfo("temperature").span < 1000 && TM.chartInfo("temperature").points === 6`, 5*time.Second)

	// 6. A building: counts, not a connection state.
	p.run("open hq", chromedp.Click(`[data-entity="hq"]`), chromedp.WaitVisible("#rollup .tile"))
	p.poll("hq badge", `document.querySelector('#connection').textContent === "2/3 connected"`, 5*time.Second)
	p.truth("hq badge is not red", `!document.querySelector('#connection').classList.contains('disconnected')`)

	// 7. Alerts: filters, timeline, acknowledge.
	p.run("alerts", chromedp.Click("#show-alerts"), chromedp.WaitVisible(`[data-alert="too-hot/t-lobby"] button.ack`))
	p.truth("open alerts listed", `document.querySelectorAll('#alerts tr').length === 4`)
	p.choose("critical only", "#alert-severity", "critical")
	p.poll("filtered", `document.querySelectorAll('#alerts tr').length === 1 && document.querySelector('[data-bar="too-hot/t-lobby"]')`, 5*time.Second)
	img = p.shot("dashboard-5-alerts")
	bar, alertsView := p.box(`[data-bar="too-hot/t-lobby"]`), p.box("#alerts-view")
	if bar.empty() || !bar.inside(alertsView) {
		t.Errorf("timeline bar %v in %v", bar, alertsView)
	} else {
		pixelIs(t, img, "critical bar", bar.X+bar.W/2, bar.Y+bar.H/2, sevCritical)
	}
	p.run("acknowledge", chromedp.Click(`[data-alert="too-hot/t-lobby"] button.ack`))
	p.poll("acknowledged", `(document.querySelector('[data-alert="too-hot/t-lobby"]')||{}).dataset?.state === "acknowledged"`, 5*time.Second)

	// 8. Accessibility: named controls, readable contrast, on each view.
	for _, view := range []string{"#show-overview", "#show-alerts"} {
		p.run("view "+view, chromedp.Click(view))
		var problems string
		p.eval(a11yProblems, &problems)
		if problems != "" {
			t.Errorf("accessibility problems on %s:\n%s", view, problems)
		}
	}
}
