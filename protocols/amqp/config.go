package amqp

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// ErrInvalid marks a definition that cannot be used (bad URL, unknown
// source, a condition that does not compile).
var ErrInvalid = errors.New("invalid definition")

// Sources a route can take events from (CONTRACT section 8).
const (
	SourceTelemetry   = "telemetry"
	SourceTwinChanges = "twinChanges"
	SourceLifecycle   = "lifecycle"
	SourceAlerts      = "alerts"
)

// messageSource maps a route source to the iothub-message-source
// annotation value IoT Hub uses.
var messageSource = map[string]string{
	SourceTelemetry:   "Telemetry",
	SourceTwinChanges: "twinChangeEvents",
	SourceLifecycle:   "deviceLifecycleEvents",
	SourceAlerts:      "alerts",
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s can name an endpoint, route or ingress.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Endpoint is an AMQP 1.0 destination: a broker or router and an address.
type Endpoint struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	URL     string `json:"url"`
	Address string `json:"address"`
	// CA is a PEM bundle trusted for amqps:// instead of the system roots.
	CA string `json:"ca,omitempty"`
}

// Route sends the events of one source that match Condition to Endpoint.
type Route struct {
	Name      string `json:"name"`
	Source    string `json:"source"`
	Condition string `json:"condition,omitempty"`
	Endpoint  string `json:"endpoint"`
	Enabled   bool   `json:"enabled"`
}

// Ingress is a queue twinmesh consumes device telemetry and cloud-to-device
// messages from. Under, when set, limits the devices it may speak for to
// that entity's subtree.
type Ingress struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	URL     string `json:"url"`
	Address string `json:"address"`
	CA      string `json:"ca,omitempty"`
	Under   string `json:"under,omitempty"`
}

// checkConn validates the connection fields shared by endpoints and
// ingresses.
func checkConn(typ, raw, address, ca string) error {
	if typ != "amqp" {
		return fmt.Errorf("%w: type must be \"amqp\"", ErrInvalid)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: url: %v", ErrInvalid, Redact(err.Error()))
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return fmt.Errorf("%w: url scheme must be amqp or amqps", ErrInvalid)
	}
	if u.Host == "" {
		return fmt.Errorf("%w: url has no host", ErrInvalid)
	}
	if address == "" {
		return fmt.Errorf("%w: address is required", ErrInvalid)
	}
	if ca != "" {
		if u.Scheme != "amqps" {
			return fmt.Errorf("%w: ca applies to amqps:// only", ErrInvalid)
		}
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(ca)) {
			return fmt.Errorf("%w: ca holds no PEM certificate", ErrInvalid)
		}
	}
	return nil
}

// Check validates the endpoint.
func (e Endpoint) Check() error {
	if !ValidName(e.Name) {
		return fmt.Errorf("%w: endpoint name %q", ErrInvalid, e.Name)
	}
	return checkConn(e.Type, e.URL, e.Address, e.CA)
}

// Check validates the ingress.
func (g Ingress) Check() error {
	if !ValidName(g.Name) {
		return fmt.Errorf("%w: ingress name %q", ErrInvalid, g.Name)
	}
	return checkConn(g.Type, g.URL, g.Address, g.CA)
}

// Check validates the route and compiles its condition.
func (r Route) Check() error {
	if !ValidName(r.Name) {
		return fmt.Errorf("%w: route name %q", ErrInvalid, r.Name)
	}
	if _, ok := messageSource[r.Source]; !ok {
		return fmt.Errorf("%w: source must be telemetry, twinChanges, lifecycle or alerts", ErrInvalid)
	}
	if !ValidName(r.Endpoint) {
		return fmt.Errorf("%w: endpoint name %q", ErrInvalid, r.Endpoint)
	}
	_, err := compileCondition(r.Condition)
	return err
}

// RedactURL hides the password of a URL ("amqp://user:***@host").
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "***")
	}
	return strings.Replace(u.String(), "%2A%2A%2A", "***", 1)
}

var userinfoRE = regexp.MustCompile(`(amqps?://[^:/@\s]*):[^@\s]*@`)

// Redact hides credentials of any amqp URL inside s (an error message from
// the client library may quote the URL it dialled).
func Redact(s string) string { return userinfoRE.ReplaceAllString(s, "$1:***@") }
