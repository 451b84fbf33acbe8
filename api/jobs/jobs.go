// Package jobs runs fleet jobs (CONTRACT section 9): a twin update
// (updateTwin) or a direct method (invokeMethod) applied to every device a
// query condition selects, from a start time on, at most maxConcurrency
// devices at a time, with progress, per-device outcomes and cancellation.
//
// Jobs are durable. Everything a job is lives in the store's jobs bucket,
// which is catalog data replicated to every member:
//
//	j/<job>           the job: definition, status, progress, selection cursor
//	d/<job>/<device>  one outcome per selected device
//	c/<job>           present once the job was asked to stop
//
// A job runs on one member, the owner of its key in rendezvous order (see
// Config.Owns); every member polls the jobs bucket and starts the jobs it
// owns that are due, so when a member dies or restarts, the owner (the
// next member, or the restarted one) resumes its jobs where their records
// say they were.
//
// A job first selects its devices, a page at a time, writing each page's
// outcomes as pending in the same commit as the cursor. It then works
// through them in waves of at most maxConcurrency devices: an intent is
// committed for the wave (the twin version each device is at), the wave
// is applied, and its outcomes are committed with the progress.
//
// A twin update is never applied twice to a device: it is applied with
// If-Match at the version of its intent, so it applies only to the twin the
// intent saw. A job resumed after a crash between the patch and its
// outcome finds the intent; if the twin is still at that version the patch
// did not happen and is applied, and if the twin moved on and already
// holds what the patch sets, the patch counts as done (applying it again
// would change nothing). A twin that moved on without holding it was
// changed by another writer meanwhile, and the job cannot tell whether its
// own patch came before: the device fails with ErrInterrupted rather than
// risk undoing the other writer's change. A direct method is invoked at
// most once: a device whose invocation was under way at a crash fails
// with ErrInterrupted, because a method (a reboot, say) may not be
// repeatable.
package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/query"
)

// Job types.
const (
	TypeUpdateTwin   = "updateTwin"
	TypeInvokeMethod = "invokeMethod"
)

// Job statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Device outcome statuses: pending (selected, not yet tried), running (an
// intent is stored: the device is being worked on, or was when its runner
// stopped), succeeded, failed.
const (
	DevicePending   = "pending"
	DeviceRunning   = "running"
	DeviceSucceeded = "succeeded"
	DeviceFailed    = "failed"
)

// Bounds and defaults of a job's parameters.
const (
	DefaultMaxConcurrency = 10
	MaxMaxConcurrency     = 100
	DefaultMethodTimeout  = 30
)

// ErrInterrupted is the outcome of a device whose update or method was
// under way when its runner stopped, and that the job does not repeat
// because it cannot tell whether it happened (see the package comment).
var ErrInterrupted = errors.New("interrupted while being applied, and not repeated: it may have been applied")

// Spec is what POST /api/v1/jobs takes.
type Spec struct {
	// JobID is optional; one is generated when empty.
	JobID          string     `json:"jobId,omitempty"`
	Type           string     `json:"type"`
	Condition      string     `json:"condition"`
	TwinPatch      *TwinPatch `json:"twinPatch,omitempty"`
	Method         *Method    `json:"method,omitempty"`
	StartTime      *time.Time `json:"startTime,omitempty"`
	MaxConcurrency int        `json:"maxConcurrency,omitempty"`
}

// TwinPatch is an updateTwin job's merge patches.
type TwinPatch struct {
	Desired json.RawMessage `json:"desired,omitempty"`
	Tags    json.RawMessage `json:"tags,omitempty"`
}

// Method is an invokeMethod job's direct method.
type Method struct {
	Name           string          `json:"name"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TimeoutSeconds int             `json:"timeoutSeconds,omitempty"`
}

// Progress counts a job's devices; Pending includes those being worked on.
type Progress struct {
	Total     int `json:"total"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Pending   int `json:"pending"`
}

// Job is a job as stored and answered.
type Job struct {
	Spec
	Status      string     `json:"status"`
	Progress    Progress   `json:"progress"`
	CreatedTime time.Time  `json:"createdTime"`
	StartedTime *time.Time `json:"startedTime,omitempty"`
	EndTime     *time.Time `json:"endTime,omitempty"`
	// Error says why a job failed as a whole.
	Error string `json:"error,omitempty"`
	// Selection is how far device selection got; Done once every device
	// the condition selects has an outcome.
	Selection Selection `json:"selection"`
}

// Selection is the progress of a job's device selection.
type Selection struct {
	Done  bool   `json:"done"`
	After string `json:"after,omitempty"`
}

// Outcome is one device's outcome in a job.
type Outcome struct {
	DeviceID string `json:"deviceId"`
	Status   string `json:"status"`
	// Version is the twin version an updateTwin intent applies to while
	// running, and the twin's version after the update once succeeded.
	Version int64 `json:"version,omitempty"`
	// Result is a direct method's answer: {"status","payload"}.
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	UpdatedAt time.Time       `json:"updatedAt"`
}

// Terminal reports whether a job status is final.
func Terminal(status string) bool {
	return status == StatusCompleted || status == StatusFailed || status == StatusCancelled
}

var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// wherePrefix turns a condition into a query; syntax error positions are
// given back relative to the condition.
const wherePrefix = "SELECT * FROM devices WHERE "

// ParseCondition parses a job's condition (a WHERE clause). A syntax
// error's position is 1-based in the condition.
func ParseCondition(cond string) (*query.Query, error) {
	if strings.TrimSpace(cond) == "" {
		return nil, errcode.New(errcode.BadRequest, "a job needs a \"condition\" (a WHERE clause, e.g. tags.site = 'b1')")
	}
	q, err := query.Parse(wherePrefix + cond)
	var se *query.SyntaxError
	if errors.As(err, &se) {
		pos := max(se.Pos-len(wherePrefix), 1)
		return nil, &query.SyntaxError{Pos: pos, Msg: se.Msg}
	}
	if err != nil {
		return nil, err
	}
	if q.Aggregate || len(q.GroupBy) > 0 || q.Top > 0 {
		return nil, errcode.New(errcode.BadRequest, "a job's condition is a WHERE clause only")
	}
	return q, nil
}

// Validate checks a spec and fills its defaults; errors are bad requests
// (or a *query.SyntaxError for the condition).
func (s *Spec) Validate() error {
	bad := func(format string, a ...any) error { return errcode.New(errcode.BadRequest, format, a...) }
	if s.JobID != "" && !jobIDPattern.MatchString(s.JobID) {
		return bad("jobId %q: letters, digits and _.:- only, at most 128, not starting with a symbol", s.JobID)
	}
	switch s.Type {
	case TypeUpdateTwin:
		if s.Method != nil {
			return bad("an updateTwin job takes \"twinPatch\", not \"method\"")
		}
		if s.TwinPatch == nil || (len(s.TwinPatch.Desired) == 0 && len(s.TwinPatch.Tags) == 0) {
			return bad("an updateTwin job needs \"twinPatch\" with \"desired\" and/or \"tags\"")
		}
		for name, raw := range map[string]json.RawMessage{"desired": s.TwinPatch.Desired, "tags": s.TwinPatch.Tags} {
			var m map[string]any
			if len(raw) > 0 && (json.Unmarshal(raw, &m) != nil || m == nil) {
				return bad("twinPatch.%s must be a JSON object", name)
			}
		}
	case TypeInvokeMethod:
		if s.TwinPatch != nil {
			return bad("an invokeMethod job takes \"method\", not \"twinPatch\"")
		}
		if s.Method == nil || s.Method.Name == "" {
			return bad("an invokeMethod job needs \"method\" with a \"name\"")
		}
		if s.Method.TimeoutSeconds == 0 {
			s.Method.TimeoutSeconds = DefaultMethodTimeout
		}
		if s.Method.TimeoutSeconds < 5 || s.Method.TimeoutSeconds > 300 {
			return bad("method.timeoutSeconds must be between 5 and 300")
		}
		if len(s.Method.Payload) > 0 && !json.Valid(s.Method.Payload) {
			return bad("method.payload must be JSON")
		}
	case "":
		return bad("a job needs a \"type\": %s or %s", TypeUpdateTwin, TypeInvokeMethod)
	default:
		return bad("unknown job type %q: %s or %s", s.Type, TypeUpdateTwin, TypeInvokeMethod)
	}
	if s.MaxConcurrency == 0 {
		s.MaxConcurrency = DefaultMaxConcurrency
	}
	if s.MaxConcurrency < 1 || s.MaxConcurrency > MaxMaxConcurrency {
		return bad("maxConcurrency must be between 1 and %d", MaxMaxConcurrency)
	}
	_, err := ParseCondition(s.Condition)
	return err
}

// Keys of the jobs bucket.
func jobKey(id string) string          { return "j/" + id }
func cancelKey(id string) string       { return "c/" + id }
func outcomePrefix(id string) string   { return "d/" + id + "/" }
func outcomeKey(id, dev string) string { return outcomePrefix(id) + dev }

// contained reports whether applying the merge patch to doc changes
// nothing: the document already holds what the patch sets. Both are JSON
// objects; an empty patch is contained in anything.
func contained(doc map[string]any, patch json.RawMessage) (bool, error) {
	if len(patch) == 0 {
		return true, nil
	}
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return false, fmt.Errorf("decode patch: %w", err)
	}
	return containedIn(doc, p), nil
}

// containedIn is contained on decoded values: every member of patch is in
// doc with the same value (an object recursively), and every null member
// of patch is absent from doc.
func containedIn(doc, patch map[string]any) bool {
	for k, pv := range patch {
		dv, ok := doc[k]
		switch pvt := pv.(type) {
		case nil:
			if ok {
				return false
			}
		case map[string]any:
			dm, isMap := dv.(map[string]any)
			if !ok || !isMap {
				return false
			}
			if !containedIn(dm, pvt) {
				return false
			}
		default:
			if !ok || !jsonEqual(dv, pv) {
				return false
			}
		}
	}
	return true
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
