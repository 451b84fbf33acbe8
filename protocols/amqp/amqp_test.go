package amqp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopRabbitMQ()
	os.Exit(code)
}

// syncBuf is a log destination tests read.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newService starts a Service in a temp folder, with its REST surface on
// an httptest server.
func newService(t *testing.T, cfg Config) (*Service, *testutil.Client, *syncBuf) {
	t.Helper()
	logs := &syncBuf{}
	if cfg.Path == "" {
		cfg.Path = t.TempDir() + "/amqp.db"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if cfg.Grains == nil {
		cfg.Grains = newTestGrains(t)
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	mux := http.NewServeMux()
	s.Mount(mux, func(h http.Handler) http.Handler { return h })
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		if t.Failed() {
			for _, st := range s.Endpoints() {
				t.Logf("endpoint %+v", st)
			}
			t.Logf("service log:\n%s", logs.String())
		}
		srv.Close()
		cancel()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, &testutil.Client{Base: srv.URL, HTTP: srv.Client()}, logs
}

// telemetry is a telemetry event of device dev with points.
func telemetry(dev string, points map[string]any) actors.Event {
	b, _ := json.Marshal(map[string]any{"ts": time.Now().UTC(), "points": points})
	return actors.Event{Type: actors.EventTelemetry, Entity: dev, Kind: "device", Data: b, TS: time.Now()}
}

// consume receives up to n messages from address (accepting each), waiting
// at most idle for the next one.
func consume(t *testing.T, url, address string, n int, idle time.Duration) []*amqp.Message {
	t.Helper()
	ctx := context.Background()
	conn, err := amqp.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := sess.NewReceiver(ctx, address, &amqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []*amqp.Message
	for len(out) < n {
		rctx, cancel := context.WithTimeout(ctx, idle)
		m, err := rcv.Receive(rctx, nil)
		cancel()
		if err != nil {
			break
		}
		if err := rcv.AcceptMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestRoutesOutWithConditionAndRedaction(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	s, c, logs := newService(t, Config{})
	body := fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/routes-out"}`, rb.URL())
	got := string(c.MustDo(t, "PUT", "/api/v1/endpoints/out", body, 200))
	for _, b := range []string{got, string(c.MustDo(t, "GET", "/api/v1/endpoints/out", nil, 200)), string(c.MustDo(t, "GET", "/api/v1/endpoints", nil, 200))} {
		if strings.Contains(b, "guest:guest") || !strings.Contains(b, "guest:***@") {
			t.Fatalf("endpoint answer does not redact the password: %s", b)
		}
	}
	c.MustDo(t, "PUT", "/api/v1/routes/hot", `{"source":"telemetry","condition":"deviceId startsWith \"d\" && body.points.temp > 20","endpoint":"out","enabled":true}`, 200)
	c.MustDo(t, "PUT", "/api/v1/routes/life", `{"source":"lifecycle","endpoint":"out","enabled":true}`, 200)
	c.MustDo(t, "PUT", "/api/v1/routes/off", `{"source":"alerts","endpoint":"out","enabled":false}`, 200)
	c.MustDo(t, "PUT", "/api/v1/routes/bad", `{"source":"telemetry","condition":"nosuchname > 1","endpoint":"out","enabled":true}`, 400)
	c.MustDo(t, "PUT", "/api/v1/routes/bad", `{"source":"weather","endpoint":"out","enabled":true}`, 400)
	c.MustDo(t, "PUT", "/api/v1/routes/bad", `{"source":"telemetry","endpoint":"nowhere","enabled":true}`, 409)
	c.MustDo(t, "PUT", "/api/v1/endpoints/bad", `{"type":"amqp","url":"http://x","address":"/queue/a"}`, 400)
	c.MustDo(t, "GET", "/api/v1/routes/bad", nil, 404)
	var routes []Route
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/routes", nil, 200), &routes); err != nil || len(routes) != 3 {
		t.Fatalf("routes: %v %+v", err, routes)
	}

	// The sink gets events as the actor system publishes them.
	emit(t, s, telemetry("d1", map[string]any{"temp": 25.0}))                                           // routed
	emit(t, s, telemetry("d1", map[string]any{"temp": 10.0}))                                           // too cold
	emit(t, s, telemetry("x1", map[string]any{"temp": 30.0}))                                           // wrong device
	emit(t, s, telemetry("d2", map[string]any{"hum": 30.0}))                                            // no temp: the condition errs, no match
	emit(t, s, actors.Event{Type: actors.EventAlert, Entity: "d1", Data: []byte(`{}`), TS: time.Now()}) // disabled route
	created, _ := json.Marshal(map[string]any{"entity": map[string]string{"kind": "device"}, "created": true})
	emit(t, s, actors.Event{Type: actors.EventTopology, Entity: "d3", Data: created, TS: time.Now()})

	msgs := consume(t, rb.URL(), "/queue/routes-out", 3, 3*time.Second)
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2 (one telemetry, one lifecycle)", len(msgs))
	}
	tm, lm := msgs[0], msgs[1]
	if tm.Annotations["iothub-connection-device-id"] != "d1" || tm.Annotations["iothub-message-source"] != "Telemetry" {
		t.Fatalf("telemetry annotations: %v", tm.Annotations)
	}
	if _, ok := tm.Annotations["iothub-enqueuedtime"].(time.Time); !ok {
		t.Fatalf("iothub-enqueuedtime is %T, want a timestamp", tm.Annotations["iothub-enqueuedtime"])
	}
	var tb struct{ Points map[string]float64 }
	if err := json.Unmarshal(tm.GetData(), &tb); err != nil || tb.Points["temp"] != 25 {
		t.Fatalf("telemetry body %s: %v", tm.GetData(), err)
	}
	if lm.Annotations["iothub-message-source"] != "deviceLifecycleEvents" || lm.ApplicationProperties["opType"] != "createDeviceIdentity" ||
		lm.Annotations["iothub-connection-device-id"] != "d3" {
		t.Fatalf("lifecycle message: %v %v", lm.Annotations, lm.ApplicationProperties)
	}
	var st EndpointStatus
	testutil.Eventually(t, 5*time.Second, "delivered counted", func() bool {
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/out", nil, 200), &st)
		return st.Delivered == 2 && st.Backlog == 0 && st.State == StateConnected
	})
	if strings.Contains(logs.String(), "guest:guest") || !strings.Contains(logs.String(), "guest:***@") {
		t.Fatalf("logs do not redact the password:\n%s", logs.String())
	}
	c.MustDo(t, "DELETE", "/api/v1/routes/off", nil, 204)
	c.MustDo(t, "GET", "/api/v1/routes/off", nil, 404)
}

// TestAMQPSWithCA routes over TLS: an endpoint that trusts the broker's CA
// delivers; one that trusts only the system roots keeps retrying and says
// why.
func TestAMQPSWithCA(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	s, c, _ := newService(t, Config{})
	ca, _ := json.Marshal(rb.CA)
	c.MustDo(t, "PUT", "/api/v1/endpoints/tls", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/tls-out","ca":%s}`, rb.TLSURL(), ca), 200)
	c.MustDo(t, "PUT", "/api/v1/endpoints/untrusted", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/tls-out"}`, rb.TLSURL()), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/a", `{"source":"telemetry","endpoint":"tls","enabled":true}`, 200)
	c.MustDo(t, "PUT", "/api/v1/routes/b", `{"source":"telemetry","endpoint":"untrusted","enabled":true}`, 200)
	emit(t, s, telemetry("d1", map[string]any{"v": 1.0}))
	var ok, bad EndpointStatus
	testutil.Eventually(t, 10*time.Second, "delivered over amqps", func() bool {
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/tls", nil, 200), &ok)
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/untrusted", nil, 200), &bad)
		return ok.Delivered == 1 && strings.Contains(bad.LastError, "certificate")
	})
	if bad.State != StateRetrying || bad.Backlog != 1 || strings.Contains(ok.URL+bad.URL, "guest:guest") {
		t.Fatalf("untrusted endpoint: %+v", bad)
	}
	if msgs := consume(t, rb.URL(), "/queue/tls-out", 2, time.Second); len(msgs) != 1 {
		t.Fatalf("%d messages arrived, want 1", len(msgs))
	}
}
