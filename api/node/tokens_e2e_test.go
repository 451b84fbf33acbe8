package node

import (
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// mintToken creates an access token through c (the admin token).
func mintToken(t *testing.T, c *testutil.Client, body string) (tok, id string) {
	t.Helper()
	var out struct{ Token, ID string }
	if err := json.Unmarshal(c.MustDo(t, "POST", "/api/v1/tokens", body, 201), &out); err != nil || out.Token == "" {
		t.Fatalf("POST /tokens: %+v %v", out, err)
	}
	return out.Token, out.ID
}

// wsClosed opens a WebSocket with tok on the node at addr, subscribes,
// and returns a channel closed when the server closes it.
func wsClosed(t *testing.T, addr, tok string) <-chan struct{} {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/api/v1/ws?access_token="+url.QueryEscape(tok), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"subscribe","entity":"hq","subtree":true}`)); err != nil {
		t.Fatal(err)
	}
	wsRead(t, c, func(m map[string]any) bool { return m["id"] == 1.0 && m["ok"] == true })
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.SetReadDeadline(time.Time{})
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return done
}

// TestTokenRevocationAcrossMembers: an access token minted on one member
// works on the other, and revoking it on the first closes its WebSockets
// on both within a second (issue 12, CONTRACT section 13).
func TestTokenRevocationAcrossMembers(t *testing.T) {
	root := t.TempDir()
	n1 := ceStart(t, "n1", "n1#1", filepath.Join(root, "n1"), "")
	n2 := ceStart(t, "n2", "n2#1", filepath.Join(root, "n2"), n1.node.Addr("gossip"))
	waitAlive(t, 60*time.Second, []*cmember{n1, n2})
	ceDo(t, 30*time.Second, []*cmember{n1}, "PUT", "/api/v1/entities/hq", `{"kind":"building"}`, 201)
	tok, id := mintToken(t, n1.node.Client(), `{"role":"viewer","under":"hq","ttl":"1h","name":"lobby screen"}`)

	as := func(m *cmember) *testutil.Client {
		return &testutil.Client{Base: m.node.URL(), Token: tok, HTTP: m.api.HTTP}
	}
	testutil.Eventually(t, 10*time.Second, "n2 to accept the token minted on n1", func() bool {
		st, _, _, err := as(n2).Do(context.Background(), "GET", "/api/v1/tokens/self", nil)
		return err == nil && st == 200
	})
	as(n2).MustDo(t, "GET", "/api/v1/twins/hq", nil, 200)
	as(n2).MustDo(t, "GET", "/api/v1/tokens", nil, 403)
	on1 := wsClosed(t, n1.node.Addr("http"), tok)
	on2 := wsClosed(t, n2.node.Addr("http"), tok)

	start := time.Now()
	n1.node.Client().MustDo(t, "DELETE", "/api/v1/tokens/"+id, nil, 204)
	for name, ch := range map[string]<-chan struct{}{"n1 (where it was revoked)": on1, "n2": on2} {
		select {
		case <-ch:
			t.Logf("WebSocket on %s closed %v after the DELETE", name, time.Since(start))
		case <-time.After(time.Second - time.Since(start)):
			t.Fatalf("WebSocket on %s still open a second after the revocation", name)
		}
	}
	for _, m := range []*cmember{n1, n2} {
		as(m).MustDo(t, "GET", "/api/v1/twins/hq", nil, 401)
	}
}

// TestDashboardViewerToken signs in to the dashboard in headless Chromium
// with a viewer token for one building: it shows that building's subtree
// and nothing else, and none of the controls a viewer may not use.
func TestDashboardViewerToken(t *testing.T) {
	chromium := testutil.RequireTool(t, "chromium")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	for _, b := range []string{"hq", "annex"} {
		api.MustDo(t, "PUT", "/api/v1/entities/"+b, `{"kind":"building"}`, 201)
		api.MustDo(t, "PUT", "/api/v1/entities/"+b+"-lab", `{"kind":"room","parent":"`+b+`"}`, 201)
	}
	d := register(t, api, "thermo-1", `{"parent":"hq-lab"}`)
	register(t, api, "annex-thermo", `{"parent":"annex-lab"}`)
	api.MustDo(t, "PUT", "/api/v1/rules/too-hot", `{"scope":{"kind":"device"},"when":"telemetry.temperature > 40","then":[{"alert":{"severity":"major","message":"too hot"}}]}`, 201)
	dev := connectDevice(t, n, d)
	must(t, dev.Publish("devices/thermo-1/messages/events/", 1, false, `{"temperature":45.5}`))
	testutil.Eventually(t, 10*time.Second, "the alert", func() bool {
		st, _, _, _ := api.Do(context.Background(), "GET", "/api/v1/alerts/too-hot/thermo-1", nil)
		return st == 200
	})
	viewer, _ := mintToken(t, api, `{"role":"viewer","under":"hq","ttl":"1h","name":"hq lobby"}`)

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
	check := func(what, expr string) {
		t.Helper()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil || !ok {
			t.Errorf("%s: %v (%s)", what, err, expr)
		}
	}
	run("sign in with the viewer token", chromedp.Navigate(n.URL()+"/"), chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", viewer), chromedp.Click("#signin"),
		chromedp.WaitVisible(`[data-entity="thermo-1"]`))
	check("who am I", `document.querySelector("#whoami").textContent.startsWith("viewer · hq")`)
	check("only its subtree", `[...document.querySelectorAll("[data-entity]")].map(e => e.dataset.entity).sort().join() === "hq,hq-lab,thermo-1"`)
	check("no tokens control", `document.querySelector("#show-tokens").hidden`)
	run("open the device", chromedp.Click(`[data-entity="thermo-1"]`), chromedp.WaitVisible(`[data-point="temperature"]`))
	check("no patch or invoke forms", `document.querySelector("#controls").hidden && document.querySelector("#patch-form").offsetParent === null && document.querySelector("#invoke-form").offsetParent === null`)
	run("alerts", chromedp.Click("#show-alerts"), chromedp.WaitVisible(`[data-alert="too-hot/thermo-1"]`))
	check("no acknowledge button", `document.querySelectorAll("button.ack").length === 0`)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#ws-state").textContent === "live"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the viewer's WebSocket is not live: %v", err)
	}
	check("no alert of the annex", `!document.body.textContent.includes("annex")`)

	// The admin token sees the annex too, and the tokens control.
	// Signing out reloads the page: a node chromedp found before the
	// reload is gone by the time it types into it ("Could not find node
	// with given id", seen in CI), so the click waits for the new page to
	// load before anything is looked up in it.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click("#signout")); err != nil {
		t.Fatalf("sign out: %v", err)
	}
	run("sign in as admin", chromedp.WaitVisible("#token"), chromedp.SendKeys("#token", n.Token), chromedp.Click("#signin"),
		chromedp.WaitVisible(`[data-entity="annex-thermo"]`), chromedp.WaitVisible("#show-tokens"))
	run("open the device", chromedp.Click(`[data-entity="thermo-1"]`), chromedp.WaitVisible("#patch-form"))
}
