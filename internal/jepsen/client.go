package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// restClient talks to the nodes' REST APIs with the admin token.
type restClient struct {
	http  *http.Client
	token string
}

func newRESTClient(token string, timeout time.Duration) *restClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	return &restClient{http: &http.Client{Timeout: timeout, Transport: tr}, token: token}
}

// answer is one HTTP exchange. sent is false when the request certainly
// never reached the node (the connection could not be made).
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
	sent   bool
}

func (c *restClient) do(ctx context.Context, base, method, path string, body []byte, hdr ...string) answer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		dial := errors.As(err, &op) && op.Op == "dial"
		return answer{err: err, sent: !dial}
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, body: out, err: err, sent: true}
}

// twinDoc is the part of a twin document the checker reads.
type twinDoc struct {
	Desired map[string]json.RawMessage `json:"desired"`
}

// observe fills out's value and version from a 2xx twin answer.
func observe(a answer, out *Output) error {
	etag := strings.Trim(strings.TrimPrefix(a.header.Get("ETag"), "W/"), `"`)
	v, err := strconv.ParseInt(etag, 10, 64)
	if err != nil {
		return fmt.Errorf("ETag %q: %v", a.header.Get("ETag"), err)
	}
	out.Version = v
	var doc twinDoc
	if err := json.Unmarshal(a.body, &doc); err != nil {
		return fmt.Errorf("twin document: %v", err)
	}
	raw, ok := doc.Desired["v"]
	if !ok {
		out.Missing = true
		return nil
	}
	return json.Unmarshal(raw, &out.Value)
}

// twinOp performs one operation on twin through the node at base and
// returns it as recorded in the history (Client left to the caller).
func (c *restClient) twinOp(ctx context.Context, node, base, twin string, in Input) Op {
	op := Op{Twin: twin, Node: node, Input: in, Call: time.Now()}
	path := "/api/v1/twins/" + url.PathEscape(twin)
	var a answer
	switch in.Kind {
	case Read:
		a = c.do(ctx, base, "GET", path, nil)
	case Write:
		a = c.do(ctx, base, "PATCH", path, []byte(fmt.Sprintf(`{"desired":{"v":%d}}`, in.Value)))
	case CAS:
		a = c.do(ctx, base, "PATCH", path, []byte(fmt.Sprintf(`{"desired":{"v":%d}}`, in.Value)),
			"If-Match", strconv.Quote(strconv.FormatInt(in.Expect, 10)))
	}
	op.Return = time.Now()
	op.HTTP = a.status
	switch {
	case a.err != nil:
		op.Err = testutil.ErrKind(a.err)
		if in.Kind == Read || !a.sent {
			op.Output.Status = Failed
		} else {
			op.Output.Status = Unknown
		}
	case a.status == 200:
		if err := observe(a, &op.Output); err != nil {
			// An answer the checker cannot read: as if there were none.
			op.Err = err.Error()
			op.Output = Output{Status: Failed}
			if in.Kind != Read {
				op.Output.Status = Unknown
			}
		}
	case a.status == http.StatusPreconditionFailed && in.Kind == CAS:
		op.Output = Output{Status: Failed, Precondition: true}
	default:
		op.Err = shortBody(a.body)
		if in.Kind == Read {
			op.Output.Status = Failed
		} else {
			// A 5xx (or anything else) after the request was sent: the
			// write may have been committed somewhere.
			op.Output.Status = Unknown
		}
	}
	return op
}

func shortBody(b []byte) string {
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		return e.Error.Code
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// deviceCreds is a registered device with its primary key.
type deviceCreds struct {
	ID, Key string
}

// mqttConnect connects device d to the MQTT listener at addr with a SAS
// token, the way devices written for IoT Hub do.
func mqttConnect(addr string, d deviceCreds) (paho.Client, error) {
	tok, err := sas.Sign("hub.test/devices/"+d.ID, d.Key, time.Now().Add(24*time.Hour))
	if err != nil {
		return nil, err
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(d.ID).
		SetUsername("hub.test/" + d.ID + "/?api-version=2021-04-12").SetPassword(tok).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(3 * time.Second).SetWriteTimeout(3 * time.Second)
	c := paho.NewClient(o)
	t := c.Connect()
	if !t.WaitTimeout(5 * time.Second) {
		c.Disconnect(0)
		return nil, errors.New("connect timed out")
	}
	if t.Error() != nil {
		return nil, t.Error()
	}
	return c, nil
}

// telemetryTopic is the device-to-cloud topic carrying the message ID in
// its property bag.
func telemetryTopic(device, mid string) string {
	return "devices/" + device + "/messages/events/" + url.QueryEscape("$.mid") + "=" + url.QueryEscape(mid)
}
