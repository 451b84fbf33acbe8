package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Action is one thing a rule does when raised. Exactly one field is set.
type Action struct {
	// Alert raises an alert on the entity while the rule is active and
	// clears it when the rule clears.
	Alert *AlertAction `json:"alert,omitempty"`
	// Command invokes a direct method on a target device.
	Command *CommandAction `json:"command,omitempty"`
	// Message sends a cloud-to-device message to a target device.
	Message *MessageAction `json:"message,omitempty"`
	// Desired patches the desired properties of a target twin.
	Desired *DesiredAction `json:"desired,omitempty"`
}

// AlertAction describes the alert a rule raises.
type AlertAction struct {
	// Severity is critical, major, minor, warning or info.
	Severity string `json:"severity"`
	// Message is shown with the alert; it defaults to the rule ID.
	Message string `json:"message,omitempty"`
}

// CommandAction invokes a direct method.
type CommandAction struct {
	// Target is "self", "parent", "child:<id>" or an entity ID; see
	// [ParseTarget].
	Target string `json:"target"`
	// Method is the direct method's name.
	Method string `json:"method"`
	// Payload is the method's JSON argument (null when absent).
	Payload json.RawMessage `json:"payload,omitempty"`
	// TimeoutSeconds bounds the call; 0 means the host's default.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// MessageAction sends a cloud-to-device message.
type MessageAction struct {
	// Target is "self", "parent", "child:<id>" or an entity ID.
	Target string `json:"target"`
	// Payload is the message body, any JSON value.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Properties are application properties sent with the message.
	Properties map[string]string `json:"properties,omitempty"`
}

// DesiredAction patches the desired properties of a twin.
type DesiredAction struct {
	// Target is "self", "parent", "child:<id>" or an entity ID.
	Target string `json:"target"`
	// Patch is a JSON merge patch; it must be a non-empty object.
	Patch json.RawMessage `json:"patch"`
}

// MaxCommandTimeoutSeconds bounds CommandAction.TimeoutSeconds.
const MaxCommandTimeoutSeconds = 3600

// TargetKind says how an action's target is resolved.
type TargetKind int

// Target kinds.
const (
	TargetSelf   TargetKind = iota + 1 // the entity the rule fired on
	TargetParent                       // its parent along "contains"
	TargetChild                        // one of its children, by ID
	TargetEntity                       // any entity, by ID
)

// String returns "self", "parent", "child" or "entity".
func (k TargetKind) String() string {
	switch k {
	case TargetSelf:
		return "self"
	case TargetParent:
		return "parent"
	case TargetChild:
		return "child"
	case TargetEntity:
		return "entity"
	default:
		return fmt.Sprintf("TargetKind(%d)", int(k))
	}
}

// Target is a parsed action target. The grain resolves it: Self is the
// entity itself, Parent its parent, Child the child ID (which the grain
// should check is one of its children), Entity the ID as given.
type Target struct {
	Kind TargetKind
	ID   string // for TargetChild and TargetEntity
}

// ParseTarget parses "self", "parent", "child:<id>" or "<entity id>". IDs
// must be non-empty and free of white space and control characters.
func ParseTarget(s string) (Target, error) {
	switch {
	case s == "self":
		return Target{Kind: TargetSelf}, nil
	case s == "parent":
		return Target{Kind: TargetParent}, nil
	case strings.HasPrefix(s, "child:"):
		id := s[len("child:"):]
		if !validEntityRef(id) {
			return Target{}, fmt.Errorf("target %q: bad child ID", truncate(s, 40))
		}
		return Target{Kind: TargetChild, ID: id}, nil
	case validEntityRef(s):
		return Target{Kind: TargetEntity, ID: s}, nil
	default:
		return Target{}, fmt.Errorf("target %q: want self, parent, child:<id> or an entity ID", truncate(s, 40))
	}
}

func validEntityRef(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for _, r := range id {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Kind returns "alert", "command", "message" or "desired", or "" when no
// field or several are set.
func (a *Action) Kind() string {
	kind, n := "", 0
	if a.Alert != nil {
		kind, n = "alert", n+1
	}
	if a.Command != nil {
		kind, n = "command", n+1
	}
	if a.Message != nil {
		kind, n = "message", n+1
	}
	if a.Desired != nil {
		kind, n = "desired", n+1
	}
	if n != 1 {
		return ""
	}
	return kind
}

// TargetString returns the action's raw target ("" for an alert).
func (a *Action) TargetString() string {
	switch {
	case a.Command != nil:
		return a.Command.Target
	case a.Message != nil:
		return a.Message.Target
	case a.Desired != nil:
		return a.Desired.Target
	}
	return ""
}

// ReservedProperty reports whether name is a system property of a
// cloud-to-device message ("$…", "iothub-…"), which only the node sets.
func ReservedProperty(name string) bool {
	return strings.HasPrefix(name, "$") || strings.HasPrefix(strings.ToLower(name), "iothub-")
}

func (a *Action) validate() error {
	switch a.Kind() {
	case "":
		return errors.New("an action has exactly one of alert, command, message, desired")
	case "alert":
		if SeverityRank(a.Alert.Severity) == 0 {
			return fmt.Errorf("alert.severity: unknown severity %q (want critical, major, minor, warning or info)", truncate(a.Alert.Severity, 32))
		}
		return nil
	case "command":
		c := a.Command
		if c.Method == "" {
			return errors.New("command.method: required")
		}
		if c.TimeoutSeconds < 0 || c.TimeoutSeconds > MaxCommandTimeoutSeconds {
			return fmt.Errorf("command.timeoutSeconds: must be between 0 and %d", MaxCommandTimeoutSeconds)
		}
	case "message":
		for k := range a.Message.Properties {
			if ReservedProperty(k) {
				return fmt.Errorf("message.properties: %q is reserved (names starting with \"$\" or \"iothub-\" are system properties)", truncate(k, 32))
			}
		}
	case "desired":
		p := bytes.TrimSpace(a.Desired.Patch)
		if len(p) < 2 || p[0] != '{' {
			return errors.New("desired.patch: must be a JSON object")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p, &m); err != nil || len(m) == 0 {
			return errors.New("desired.patch: must be a non-empty JSON object")
		}
	}
	if _, err := ParseTarget(a.TargetString()); err != nil {
		return fmt.Errorf("%s.%v", a.Kind(), err)
	}
	return nil
}
