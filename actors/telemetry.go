package actors

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/internal/strictjson"
)

// DecodeTelemetry turns a device message into a TelemetryIn. A JSON object
// payload (content type absent or JSON) yields telemetry points: its
// numeric, boolean and string members. Anything else is kept raw with its
// content type, so nothing a device sends is lost. Protocol adapters share
// this so MQTT and AMQP devices decode alike.
func DecodeTelemetry(payload []byte, contentType string, ts time.Time, props map[string]string) TelemetryIn {
	in := TelemetryIn{TS: ts, ContentType: contentType, Properties: props}
	if len(props) == 0 {
		in.Properties = nil
	}
	ct := strings.ToLower(contentType)
	jsonish := ct == "" || strings.Contains(ct, "json")
	trimmed := bytes.TrimSpace(payload)
	if jsonish && len(trimmed) > 0 && trimmed[0] == '{' {
		if points, ok := flatPoints(trimmed); ok && len(points) > 0 && strictjson.Check(trimmed) == nil {
			in.Points, in.Payload = points, payload
			if in.ContentType == "" {
				in.ContentType = "application/json"
			}
			return in
		}
		var obj map[string]any
		// An ambiguous document (a member twice, an integer json would
		// round) is kept raw rather than read one way.
		if err := json.Unmarshal(trimmed, &obj); err == nil && strictjson.Check(trimmed) == nil {
			points := map[string]any{}
			for k, v := range obj {
				switch x := v.(type) {
				case float64:
					if !math.IsNaN(x) && !math.IsInf(x, 0) {
						points[k] = x
					}
				case bool, string:
					points[k] = x
				}
			}
			if len(points) > 0 {
				in.Points, in.Payload = points, payload
				if in.ContentType == "" {
					in.ContentType = "application/json"
				}
				return in
			}
		}
	}
	in.Raw = append([]byte(nil), payload...)
	if in.ContentType == "" {
		in.ContentType = "application/octet-stream"
	}
	return in
}
