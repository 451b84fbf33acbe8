package rules

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Callers test them with errors.Is; the returned errors
// wrap them with detail.
var (
	// ErrInvalid: a rule document is malformed or fails validation (unknown
	// field, bad duration, unknown aggregation or anomaly mode, missing
	// "then", an expression that does not compile or is not boolean). The
	// API maps it to 400. Expression errors are also a *[CompileError].
	ErrInvalid = errors.New("rules: invalid rule")
	// ErrNotCompiled: Step, Tick or NewState was called on a Rule that was
	// built as a literal and never passed through [Parse] or [Rule.Compile].
	// It signals a programming error in the caller.
	ErrNotCompiled = errors.New("rules: rule not compiled")
	// ErrStateMismatch: the *State handed to Step or Tick belongs to another
	// rule (its rule ID differs). It signals a programming error in the
	// caller, which keys states by rule ID.
	ErrStateMismatch = errors.New("rules: state belongs to another rule")
	// ErrEval: a condition failed at run time for a reason other than
	// missing data — a type mismatch such as "abc" > 3, or a builtin given
	// a value it cannot take. The state machine makes no transition on
	// such an evaluation; the outcomes returned alongside are still valid.
	// The grain should log it (rate-limited), not fail the message.
	ErrEval = errors.New("rules: evaluation failed")
	// ErrInvalidTransition: an alert lifecycle method was called from a
	// state that does not allow it (acknowledging an alert that is not
	// active). The API maps it to 409.
	ErrInvalidTransition = errors.New("rules: invalid alert transition")
)

// CompileError reports an expression that does not compile. It wraps
// [ErrInvalid].
//
// Line and Column are 1-based and point at the offending token; errors
// about the expression as a whole (such as a non-boolean result) point at
// line 1, column 1. Message is the expr compiler's message without the
// position; Snippet, when present, is the offending line with a caret under
// the column, ready to print in a monospace font.
type CompileError struct {
	Field   string `json:"field"` // "when" or "clear"
	Message string `json:"message"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Snippet string `json:"snippet,omitempty"`
}

// Error implements error: "when: line 1, column 13: unexpected token ...".
func (e *CompileError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: line %d, column %d: %s", e.Field, e.Line, e.Column, e.Message)
	if e.Snippet != "" {
		b.WriteString(e.Snippet)
	}
	return b.String()
}

// Unwrap returns [ErrInvalid], so errors.Is(err, ErrInvalid) holds.
func (e *CompileError) Unwrap() error { return ErrInvalid }

// invalidf returns an error wrapping ErrInvalid with a formatted detail.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
