package streamclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"
)

// StatusError is a stream the node did not open: its HTTP status and
// error body (404 device not connected, 403 refused by the device or not
// allowed for the token, 504 no answer in time, 429 a limit reached, …).
type StatusError struct {
	Status  int
	Code    string
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("stream not opened: %d %s: %s", e.Status, e.Code, e.Message)
}

// Dialer opens streams as a service.
type Dialer struct {
	// Node is the node's base URL, http(s):// or ws(s)://.
	Node string
	// Token is an admin token, or an operator token whose scope covers
	// the device.
	Token string
	// TLS configures wss:// (nil: the system's roots).
	TLS *tls.Config
}

// Dial opens stream name to device; the WebSocket it returns carries the
// stream's bytes as binary frames. Errors from the node are *StatusError.
func (d *Dialer) Dial(ctx context.Context, device, name string) (*websocket.Conn, error) {
	u, err := wsURL(d.Node)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/devices/" + url.PathEscape(device) + "/streams/" + url.PathEscape(name)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+d.Token)
	return dial(ctx, u.String(), h, d.TLS)
}

// wsURL turns a node's base URL into a ws:// or wss:// one.
func wsURL(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("node URL %q: %w", base, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("node URL %q: want http://, https://, ws:// or wss://", base)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("node URL %q has no host", base)
	}
	return u, nil
}

func dial(ctx context.Context, u string, h http.Header, tc *tls.Config) (*websocket.Conn, error) {
	dl := websocket.Dialer{TLSClientConfig: tc, ReadBufferSize: chunk, WriteBufferSize: chunk, Proxy: http.ProxyFromEnvironment}
	ws, res, err := dl.DialContext(ctx, u, h)
	if err == nil {
		return ws, nil
	}
	if res == nil {
		return nil, fmt.Errorf("stream %s: %w", u, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		e.Error.Message = strings.TrimSpace(string(body))
	}
	return nil, &StatusError{Status: res.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
}
