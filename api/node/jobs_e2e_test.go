package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// jobView is what the tests read of a job.
type jobView struct {
	JobID    string `json:"jobId"`
	Status   string `json:"status"`
	Progress struct {
		Total, Succeeded, Failed, Pending int
	} `json:"progress"`
}

func getJob(t *testing.T, c *testutil.Client, id string) jobView {
	t.Helper()
	var j jobView
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/jobs/"+id, nil, 200), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

type jobOutcome struct {
	DeviceID string          `json:"deviceId"`
	Status   string          `json:"status"`
	Version  int64           `json:"version"`
	Result   json.RawMessage `json:"result"`
	Error    string          `json:"error"`
}

// jobDevices reads every outcome of a job, page by page.
func jobDevices(t *testing.T, c *testutil.Client, id string) []jobOutcome {
	t.Helper()
	var out []jobOutcome
	cursor := ""
	for {
		var p struct {
			Items []jobOutcome `json:"items"`
			Next  string       `json:"next"`
		}
		body := c.MustDo(t, "GET", "/api/v1/jobs/"+id+"/devices?limit=500&cursor="+url.QueryEscape(cursor), nil, 200)
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Items...)
		if p.Next == "" {
			return out
		}
		cursor = p.Next
	}
}

// TestJobs drives fleet jobs (CONTRACT section 9) through the binary. A
// twin update job over 800 devices is SIGKILLed with its node part way;
// the restarted node resumes it, and every device ends patched exactly
// once (twin version 1 after the import, 2 after the job). Job events
// reach a WebSocket subscribed to "$jobs". A method job records each
// device's answer or failure; a job cancelled before its start time ends
// cancelled without touching a device; the dashboard's jobs view shows
// jobs, live, and cancels one; a malformed condition is a 400 with its
// position.
func TestJobs(t *testing.T) {
	const fleet = 800
	data := t.TempDir()
	n := testutil.Start(t, data)
	c := n.Client()

	var nd strings.Builder
	nd.WriteString(`{"entity":{"id":"jplant","kind":"building"}}` + "\n")
	for i := range fleet {
		fmt.Fprintf(&nd, `{"entity":{"id":"jd%04d","kind":"device","parent":"jplant"},"identity":{},"twin":{"tags":{"batch":"a"}}}`+"\n", i)
	}
	c.MustDo(t, "POST", "/api/v1/import", nd.String(), 200)
	if got := fleetQuery(t, c, "SELECT COUNT() AS n FROM devices WHERE tags.batch = 'a' AND version = 1", 100); got[0]["n"] != float64(fleet) {
		t.Fatalf("imported twins at version 1: %v, want %d", got, fleet)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.Addr("http")+"/api/v1/ws?access_token="+url.QueryEscape(n.Token), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"id": 1, "op": "subscribe", "entity": "$jobs", "events": []string{"job"}}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var reply map[string]any
	if err := ws.ReadJSON(&reply); err != nil || reply["ok"] != true {
		t.Fatalf("subscribe to $jobs: %v %v", reply, err)
	}

	body := c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "updateTwin", "condition": "tags.batch = 'a'",
		"twinPatch": map[string]any{"desired": map[string]any{"fw": "2.0"}}, "maxConcurrency": 2}, 201)
	var job jobView
	if err := json.Unmarshal(body, &job); err != nil || job.JobID == "" || job.Status != "queued" {
		t.Fatalf("created job %s: %v", body, err)
	}
	var ev struct {
		Type, Entity string
		Data         jobView
	}
	if err := ws.ReadJSON(&ev); err != nil || ev.Type != "job" || ev.Entity != "$jobs/"+job.JobID || ev.Data.JobID != job.JobID {
		t.Fatalf("job event %+v: %v", ev, err)
	}

	var atKill jobView
	testutil.Eventually(t, 60*time.Second, "the job's first 60 devices", func() bool {
		atKill = getJob(t, c, job.JobID)
		return atKill.Progress.Succeeded >= 60
	})
	n.Kill()
	if atKill.Status != "running" || atKill.Progress.Pending == 0 {
		t.Fatalf("the job finished before the node was killed (%+v): nothing was resumed", atKill)
	}
	t.Logf("killed at %+v", atKill.Progress)

	n = testutil.Start(t, data)
	c = n.Client()
	var done jobView
	testutil.Eventually(t, 90*time.Second, "the resumed job to complete", func() bool {
		done = getJob(t, c, job.JobID)
		return done.Status == "completed"
	})
	if p := done.Progress; p.Total != fleet || p.Succeeded != fleet || p.Failed != 0 || p.Pending != 0 {
		t.Fatalf("progress after resume %+v, want %d succeeded", p, fleet)
	}
	outs := jobDevices(t, c, job.JobID)
	if len(outs) != fleet {
		t.Fatalf("%d outcomes, want %d", len(outs), fleet)
	}
	for _, o := range outs {
		if o.Status != "succeeded" || o.Version != 2 {
			t.Fatalf("outcome %+v, want succeeded at version 2", o)
		}
	}
	// Exactly once: one version more than after the import, on every twin.
	if got := fleetQuery(t, c, "SELECT COUNT() AS n FROM devices WHERE tags.batch = 'a' AND version = 2 AND properties.desired.fw = '2.0'", 100); got[0]["n"] != float64(fleet) {
		t.Fatalf("twins patched exactly once: %v, want %d", got, fleet)
	}

	t.Run("invokeMethod", func(t *testing.T) {
		on := register(t, c, "jm1", `{"parent":"jplant"}`)
		register(t, c, "jm2", `{"parent":"jplant"}`)
		dc := connectDevice(t, n, on)
		must(t, dc.Subscribe("$iothub/methods/POST/#", 0, func(cl paho.Client, m paho.Message) {
			_, rid, _ := strings.Cut(m.Topic(), "$rid=")
			cl.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, `{"echo":`+string(m.Payload())+`}`)
		}))
		body := c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "invokeMethod", "condition": "STARTS_WITH(deviceId, 'jm')",
			"method": map[string]any{"name": "ping", "payload": map[string]any{"n": 1}, "timeoutSeconds": 5}}, 201)
		var mj jobView
		if err := json.Unmarshal(body, &mj); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, "the method job", func() bool { return getJob(t, c, mj.JobID).Status == "completed" })
		outs := jobDevices(t, c, mj.JobID)
		if len(outs) != 2 || outs[0].DeviceID != "jm1" || outs[0].Status != "succeeded" ||
			string(outs[0].Result) != `{"status":200,"payload":{"echo":{"n":1}}}` || outs[1].Status != "failed" || outs[1].Error == "" {
			t.Fatalf("method outcomes %+v", outs)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		body := c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "updateTwin", "condition": "tags.batch = 'a'",
			"twinPatch": map[string]any{"tags": map[string]any{"late": true}}, "startTime": time.Now().Add(time.Hour).Format(time.RFC3339)}, 201)
		var cj jobView
		if err := json.Unmarshal(body, &cj); err != nil {
			t.Fatal(err)
		}
		c.MustDo(t, "POST", "/api/v1/jobs/"+cj.JobID+"/cancel", nil, 200)
		if got := getJob(t, c, cj.JobID); got.Status != "cancelled" || got.Progress.Total != 0 {
			t.Fatalf("cancelled job %+v", got)
		}
		if got := fleetQuery(t, c, "SELECT COUNT() AS n FROM devices WHERE IS_DEFINED(tags.late)", 100); got[0]["n"] != 0.0 {
			t.Fatalf("a cancelled job touched devices: %v", got)
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		chromium := testutil.RequireTool(t, "chromium")
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
			chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-background-networking", true),
			chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()))
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		defer cancelA()
		ctx, cancel := chromedp.NewContext(actx)
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
		defer cancelT()
		status := func(id string) string {
			return `document.querySelector('[data-job="` + id + `"] td:nth-child(4)').textContent`
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(n.URL()+"/"), chromedp.WaitVisible("#token"),
			chromedp.SendKeys("#token", n.Token), chromedp.Click("#signin"), chromedp.WaitVisible("#show-jobs"),
			chromedp.Click("#show-jobs"), chromedp.WaitVisible(`[data-job="`+job.JobID+`"]`)); err != nil {
			t.Fatalf("open the jobs view: %v", err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#ws-state").textContent === "live"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("the page's WebSocket: %v", err)
		}
		if got, err := chromedp.Run(ctx, chromedp.Evaluate[string](status(job.JobID))); err != nil || got != "completed" {
			t.Errorf("the resumed job shows %q: %v", got, err)
		}
		// A new job shows up by its event, and the page cancels it.
		body := c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "updateTwin", "condition": "tags.batch = 'b'",
			"twinPatch": map[string]any{"desired": map[string]any{"x": 1}}, "startTime": time.Now().Add(time.Hour).Format(time.RFC3339)}, 201)
		var lj jobView
		if err := json.Unmarshal(body, &lj); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.WaitVisible(`[data-job="`+lj.JobID+`"] button`), chromedp.Click(`[data-job="`+lj.JobID+`"] button`)); err != nil {
			t.Fatalf("the live job row: %v", err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](status(lj.JobID)+` === "cancelled"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Errorf("cancelled from the page: %v", err)
		}
		if got := getJob(t, c, lj.JobID); got.Status != "cancelled" {
			t.Errorf("job cancelled from the page is %q", got.Status)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		body := c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "updateTwin", "condition": "tags.a = = 1",
			"twinPatch": map[string]any{"desired": map[string]any{"x": 1}}}, 400)
		var e struct {
			Error struct{ Position int } `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error.Position != 10 {
			t.Errorf("malformed condition: %s, want position 10", body)
		}
		c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "reboot", "condition": "tags.a = 1"}, 400)
		c.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "updateTwin", "condition": "tags.a = 1",
			"twinPatch": map[string]any{"desired": map[string]any{"x": 1}}, "maxConcurrency": 1000}, 400)
		c.MustDo(t, "GET", "/api/v1/jobs/nope", nil, 404)
	})
}

// TestJobsMemberDeath: a job runs on one member of three (the owner of its
// key); that member is SIGKILLed part way, and another takes the job over
// from the replicated records and completes it, every device patched
// exactly once.
func TestJobsMemberDeath(t *testing.T) {
	const fleet = 400
	root := t.TempDir()
	n1 := ceStart(t, "n1", "n1", filepath.Join(root, "n1"), "")
	n2 := ceStart(t, "n2", "n2", filepath.Join(root, "n2"), n1.node.Addr("gossip"))
	n3 := ceStart(t, "n3", "n3", filepath.Join(root, "n3"), n1.node.Addr("gossip"))
	members := []*cmember{n1, n2, n3}
	waitAlive(t, 60*time.Second, members)

	var nd strings.Builder
	nd.WriteString(`{"entity":{"id":"kplant","kind":"building"}}` + "\n")
	for i := range fleet {
		fmt.Fprintf(&nd, `{"entity":{"id":"kd%04d","kind":"device","parent":"kplant"},"identity":{},"twin":{"tags":{"batch":"k"}}}`+"\n", i)
	}
	c1 := n1.node.Client()
	c1.MustDo(t, "POST", "/api/v1/import", nd.String(), 200)
	body := c1.MustDo(t, "POST", "/api/v1/jobs", map[string]any{"type": "updateTwin", "condition": "tags.batch = 'k'",
		"twinPatch": map[string]any{"desired": map[string]any{"fw": "3.0"}}, "maxConcurrency": 1}, 201)
	var job jobView
	if err := json.Unmarshal(body, &job); err != nil {
		t.Fatal(err)
	}
	var runner *cmember
	testutil.Eventually(t, 30*time.Second, "a member to start the job", func() bool {
		for _, m := range members {
			if strings.Contains(m.node.Logs(), `msg="job started" component=jobs job=`+job.JobID) {
				runner = m
				return true
			}
		}
		return false
	})
	var atKill jobView
	testutil.Eventually(t, 60*time.Second, "the job's first 30 devices", func() bool {
		atKill = getJob(t, runner.node.Client(), job.JobID)
		return atKill.Progress.Succeeded >= 30
	})
	runner.node.Kill()
	if atKill.Progress.Pending == 0 {
		t.Fatalf("the job finished before its member was killed (%+v)", atKill)
	}
	var rest []*cmember
	for _, m := range members {
		if m != runner {
			rest = append(rest, m)
		}
	}
	t.Logf("killed %s, which ran the job, at %+v", runner.name, atKill.Progress)

	c := rest[0].node.Client()
	var done jobView
	testutil.Eventually(t, 120*time.Second, "another member to complete the job", func() bool {
		st, _, out, err := c.Do(context.Background(), "GET", "/api/v1/jobs/"+job.JobID, nil)
		return err == nil && st == 200 && json.Unmarshal(out, &done) == nil && done.Status == "completed"
	})
	if p := done.Progress; p.Total != fleet || p.Succeeded != fleet || p.Failed != 0 {
		t.Fatalf("progress after the takeover %+v, want %d succeeded", p, fleet)
	}
	resumed := 0
	for _, m := range rest {
		resumed += strings.Count(m.node.Logs(), `msg="job resumed" component=jobs job=`+job.JobID)
	}
	if resumed == 0 {
		t.Errorf("no surviving member logged resuming the job")
	}
	if got := fleetQuery(t, c, "SELECT COUNT() AS n FROM devices WHERE tags.batch = 'k' AND version = 2 AND properties.desired.fw = '3.0'", 100); got[0]["n"] != float64(fleet) {
		t.Fatalf("twins patched exactly once: %v, want %d", got, fleet)
	}
}
