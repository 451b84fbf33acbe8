package iothub

// Jobs of the IoT Hub service API (`/jobs/v2/…`): the calls of the SDKs'
// JobClient (scheduleTwinUpdate, scheduleDeviceMethod, getJob, cancelJob,
// createQuery), translated to and from fleet jobs (package jobs).

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/twinmesh/twinmesh/api/jobs"
	"github.com/twinmesh/twinmesh/api/query"
)

// Jobs creates, reads and cancels fleet jobs (*jobs.Manager implements
// it). Its errors are answered with the status Config.Status gives them.
type Jobs interface {
	Create(ctx context.Context, spec jobs.Spec) (jobs.Job, error)
	Get(id string) (jobs.Job, error)
	Cancel(ctx context.Context, id string) (jobs.Job, error)
	List() ([]jobs.Job, error)
}

var _ Jobs = (*jobs.Manager)(nil)

// IoT Hub's job types.
const (
	hubUpdateTwin   = "scheduleUpdateTwin"
	hubDeviceMethod = "scheduleDeviceMethod"
)

// hubJobRequest is the body of PUT /jobs/v2/{id}.
type hubJobRequest struct {
	JobID          string `json:"jobId"`
	Type           string `json:"type"`
	QueryCondition string `json:"queryCondition"`
	UpdateTwin     *struct {
		Tags       json.RawMessage `json:"tags"`
		Properties struct {
			Desired json.RawMessage `json:"desired"`
		} `json:"properties"`
	} `json:"updateTwin"`
	CloudToDeviceMethod *hubMethod `json:"cloudToDeviceMethod"`
	StartTime           *time.Time `json:"startTime"`
	MaxExecutionTime    int64      `json:"maxExecutionTimeInSeconds"`
}

type hubMethod struct {
	MethodName      string          `json:"methodName"`
	Payload         json.RawMessage `json:"payload"`
	ResponseTimeout int             `json:"responseTimeoutInSeconds"`
	ConnectTimeout  int             `json:"connectTimeoutInSeconds"`
}

// hubJob is IoT Hub's JobResponse.
type hubJob struct {
	JobID               string          `json:"jobId"`
	QueryCondition      string          `json:"queryCondition"`
	CreatedTime         time.Time       `json:"createdTime"`
	StartTime           *time.Time      `json:"startTime,omitempty"`
	EndTime             *time.Time      `json:"endTime,omitempty"`
	Type                string          `json:"type"`
	Status              string          `json:"status"`
	FailureReason       string          `json:"failureReason,omitempty"`
	CloudToDeviceMethod *hubMethod      `json:"cloudToDeviceMethod,omitempty"`
	UpdateTwin          json.RawMessage `json:"updateTwin,omitempty"`
	DeviceJobStatistics struct {
		DeviceCount    int `json:"deviceCount"`
		FailedCount    int `json:"failedCount"`
		SucceededCount int `json:"succeededCount"`
		RunningCount   int `json:"runningCount"`
		PendingCount   int `json:"pendingCount"`
	} `json:"deviceJobStatistics"`
}

func toHubJob(j jobs.Job) hubJob {
	out := hubJob{JobID: j.JobID, QueryCondition: j.Condition, CreatedTime: j.CreatedTime, StartTime: j.StartTime,
		EndTime: j.EndTime, Status: j.Status, FailureReason: j.Error}
	switch j.Type {
	case jobs.TypeUpdateTwin:
		out.Type = hubUpdateTwin
		if p := j.TwinPatch; p != nil {
			ut := map[string]any{}
			if len(p.Tags) > 0 {
				ut["tags"] = p.Tags
			}
			if len(p.Desired) > 0 {
				ut["properties"] = map[string]any{"desired": p.Desired}
			}
			out.UpdateTwin, _ = json.Marshal(ut)
		}
	case jobs.TypeInvokeMethod:
		out.Type = hubDeviceMethod
		if m := j.Method; m != nil {
			out.CloudToDeviceMethod = &hubMethod{MethodName: m.Name, Payload: m.Payload, ResponseTimeout: m.TimeoutSeconds}
		}
	}
	s := &out.DeviceJobStatistics
	s.DeviceCount, s.FailedCount, s.SucceededCount, s.PendingCount = j.Progress.Total, j.Progress.Failed, j.Progress.Succeeded, j.Progress.Pending
	return out
}

// putJob answers PUT /jobs/v2/{id}: schedule a twin update or a direct
// method over a query condition.
func (h *Handler) putJob(w http.ResponseWriter, r *http.Request) {
	var b hubJobRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 256<<10)).Decode(&b); err != nil {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	if b.JobID != "" && b.JobID != r.PathValue("id") {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", "the body's jobId does not match the path")
		return
	}
	spec := jobs.Spec{JobID: r.PathValue("id"), Condition: b.QueryCondition, StartTime: b.StartTime}
	switch b.Type {
	case hubUpdateTwin:
		spec.Type = jobs.TypeUpdateTwin
		if b.UpdateTwin != nil {
			spec.TwinPatch = &jobs.TwinPatch{Desired: nonNull(b.UpdateTwin.Properties.Desired), Tags: nonNull(b.UpdateTwin.Tags)}
		}
	case hubDeviceMethod:
		spec.Type = jobs.TypeInvokeMethod
		if m := b.CloudToDeviceMethod; m != nil {
			spec.Method = &jobs.Method{Name: m.MethodName, Payload: nonNull(m.Payload), TimeoutSeconds: m.ResponseTimeout + m.ConnectTimeout}
		}
	default:
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", "job type must be "+hubUpdateTwin+" or "+hubDeviceMethod)
		return
	}
	j, err := h.cfg.Jobs.Create(r.Context(), spec)
	if err != nil {
		h.jobError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toHubJob(j))
}

// getJob answers GET /jobs/v2/{id}.
func (h *Handler) getJob(w http.ResponseWriter, r *http.Request) {
	j, err := h.cfg.Jobs.Get(r.PathValue("id"))
	if err != nil {
		h.jobError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toHubJob(j))
}

// cancelJob answers POST /jobs/v2/{id}/cancel.
func (h *Handler) cancelJob(w http.ResponseWriter, r *http.Request) {
	j, err := h.cfg.Jobs.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		h.jobError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toHubJob(j))
}

// queryJobs answers GET /jobs/v2/query[?jobType=&jobStatus=]: every
// matching job on one page.
func (h *Handler) queryJobs(w http.ResponseWriter, r *http.Request) {
	list, err := h.cfg.Jobs.List()
	if err != nil {
		h.jobError(w, r, err)
		return
	}
	typ, status := r.URL.Query().Get("jobType"), r.URL.Query().Get("jobStatus")
	out := []hubJob{}
	for _, j := range list {
		hj := toHubJob(j)
		if (typ == "" || hj.Type == typ) && (status == "" || hj.Status == status) {
			out = append(out, hj)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// jobError answers an error of Jobs with its status and IoT Hub's name
// for it.
func (h *Handler) jobError(w http.ResponseWriter, r *http.Request, err error) {
	var se *query.SyntaxError
	if errors.As(err, &se) {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", "queryCondition: "+se.Error())
		return
	}
	switch st := h.cfg.Status(err); st {
	case http.StatusNotFound:
		writeError(w, st, "JobNotFound", err.Error())
	case http.StatusConflict:
		writeError(w, st, "JobAlreadyExists", err.Error())
	default:
		h.registryError(w, r, err)
	}
}
