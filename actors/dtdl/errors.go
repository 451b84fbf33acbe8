package dtdl

import (
	"errors"
	"fmt"
)

// Sentinel errors; test them with errors.Is.
var (
	// ErrInvalid: the document is not a valid DTDL interface (malformed
	// JSON, missing or mistyped member, bad name or DTMI, duplicate name).
	ErrInvalid = errors.New("dtdl: invalid model")
	// ErrUnsupported: the document uses a DTDL feature this package does
	// not implement (Relationship, extends, geospatial schemas, extensions
	// other than quantitativeTypes). The error names the feature.
	ErrUnsupported = errors.New("dtdl: unsupported feature")
	// ErrMismatch: device or client data does not match the model.
	ErrMismatch = errors.New("dtdl: data does not match the model")
)

// Error is a parse or validation error at a JSON path. It wraps one of
// the sentinels.
type Error struct {
	// Kind is ErrInvalid, ErrUnsupported or ErrMismatch.
	Kind error
	// Path is a JSON path into the model document (parse errors) or the
	// payload (validation errors): "$.contents[2].schema", "$.temperature".
	Path string
	// Msg says what is wrong, and for a mismatch what was expected.
	Msg string
}

// Error implements error: "<path>: <msg>".
func (e *Error) Error() string { return e.Path + ": " + e.Msg }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func invalid(path, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Path: path, Msg: fmt.Sprintf(format, args...)}
}

func unsupported(path, format string, args ...any) *Error {
	return &Error{Kind: ErrUnsupported, Path: path, Msg: fmt.Sprintf(format, args...)}
}

func mismatch(path, format string, args ...any) *Error {
	return &Error{Kind: ErrMismatch, Path: path, Msg: fmt.Sprintf(format, args...)}
}
