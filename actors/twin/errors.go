package twin

import "errors"

// Sentinel errors returned by [Twin.Patch] and [Twin.UnmarshalJSON]. Callers
// test them with errors.Is; the returned errors wrap them with detail.
var (
	// ErrMalformed: the patch is not valid JSON or not a JSON object (an
	// array, null, a string or a number), or a stored document cannot be
	// decoded. The API maps it to 400.
	ErrMalformed = errors.New("twin: malformed")
	// ErrTooLarge: the resulting section would exceed Limits.MaxSectionBytes.
	// The API maps it to 413.
	ErrTooLarge = errors.New("twin: section too large")
	// ErrTooDeep: the resulting section would exceed Limits.MaxDepth. The API
	// maps it to 413.
	ErrTooDeep = errors.New("twin: section too deep")
	// ErrReservedKey: the patch names a member that starts with '$' (such as
	// "$version" or "$metadata"), even to delete it. The API maps it to 400.
	ErrReservedKey = errors.New("twin: reserved key")
	// ErrUnknownSection: the Section is not Desired, Reported or Tags. It
	// signals a programming error in the caller.
	ErrUnknownSection = errors.New("twin: unknown section")
	// ErrTooManyPoints: a telemetry message with more points than
	// Limits.MaxPointsPerMessage, or new point names beyond
	// Limits.MaxPoints for the device (CheckPoints). The API maps it to 413.
	ErrTooManyPoints = errors.New("twin: too many telemetry points")
	// ErrPointName: a telemetry point name longer than Limits.MaxPointName
	// (CheckPoints). The API maps it to 400.
	ErrPointName = errors.New("twin: telemetry point name too long")
)
