package errcode_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// every lists each code with its sentinel, its stable name and its HTTP
// status (CONTRACT section 2). A code added to the package without a row
// here fails TestEveryCodeListed.
var every = []struct {
	code     errcode.Code
	sentinel error
	name     string
	status   int
}{
	{errcode.OK, nil, "ok", http.StatusOK},
	{errcode.Internal, errcode.ErrInternal, "internal", http.StatusInternalServerError},
	{errcode.BadRequest, errcode.ErrBadRequest, "bad_request", http.StatusBadRequest},
	{errcode.NotFound, errcode.ErrNotFound, "not_found", http.StatusNotFound},
	{errcode.Conflict, errcode.ErrConflict, "conflict", http.StatusConflict},
	{errcode.Precondition, errcode.ErrPrecondition, "precondition_failed", http.StatusPreconditionFailed},
	{errcode.TooLarge, errcode.ErrTooLarge, "too_large", http.StatusRequestEntityTooLarge},
	{errcode.Throttled, errcode.ErrThrottled, "throttled", http.StatusTooManyRequests},
	{errcode.Unavailable, errcode.ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{errcode.Fenced, errcode.ErrFenced, "fenced", http.StatusServiceUnavailable},
	{errcode.NotConnected, errcode.ErrNotConnected, "not_connected", http.StatusNotFound},
	{errcode.Timeout, errcode.ErrTimeout, "timeout", http.StatusGatewayTimeout},
	{errcode.UnknownOp, errcode.ErrUnknownOp, "unknown_op", http.StatusNotFound},
	{errcode.Unauthorized, errcode.ErrUnauthorized, "unauthorized", http.StatusUnauthorized},
	{errcode.Forbidden, errcode.ErrForbidden, "forbidden", http.StatusForbidden},
}

func TestEveryCodeListed(t *testing.T) {
	for i, tc := range every {
		if tc.code != errcode.Code(i) {
			t.Fatalf("row %d is %v: the table must list the codes in order, without gaps", i, tc.code)
		}
	}
	// The first value past the last code has no name: the table is complete.
	if next := errcode.Code(len(every)); !strings.HasPrefix(next.String(), "code(") {
		t.Fatalf("code %d is named %q but has no row in this test", int32(next), next.String())
	}
}

func TestStringParseRoundTrip(t *testing.T) {
	for _, tc := range every {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.code.String(); got != tc.name {
				t.Fatalf("String() = %q, want %q", got, tc.name)
			}
			if got := errcode.Parse(tc.name); got != tc.code {
				t.Fatalf("Parse(%q) = %v, want %v", tc.name, got, tc.code)
			}
		})
	}
	for name, c := range map[string]errcode.Code{"negative": -1, "past the end": 1000} {
		t.Run(name, func(t *testing.T) {
			want := fmt.Sprintf("code(%d)", int32(c))
			if got := c.String(); got != want {
				t.Fatalf("String() = %q, want %q", got, want)
			}
		})
	}
	for _, s := range []string{"", "NOT_FOUND", "nope", "code(3)"} {
		if got := errcode.Parse(s); got != errcode.Internal {
			t.Errorf("Parse(%q) = %v, want internal", s, got)
		}
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, tc := range every {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.code.HTTPStatus(); got != tc.status {
				t.Fatalf("HTTPStatus() = %d, want %d", got, tc.status)
			}
		})
	}
	if got := errcode.Code(1000).HTTPStatus(); got != http.StatusInternalServerError {
		t.Fatalf("unknown code: HTTPStatus() = %d, want 500", got)
	}
}

func TestPublicCode(t *testing.T) {
	for _, tc := range every {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.code
			if tc.code == errcode.Fenced {
				want = errcode.Unavailable
			}
			if got := tc.code.PublicCode(); got != want {
				t.Fatalf("PublicCode() = %v, want %v", got, want)
			}
			if tc.code.PublicCode().HTTPStatus() != tc.code.HTTPStatus() {
				t.Fatalf("the public code answers another status than the code")
			}
		})
	}
}

func TestFencedIsUnavailable(t *testing.T) {
	fenced := fmt.Errorf("call grain: %w", errcode.New(errcode.Fenced, "activation of epoch %d was superseded", 3))
	if !errors.Is(fenced, errcode.ErrUnavailable) {
		t.Fatal("a fenced error must match ErrUnavailable")
	}
	if !errors.Is(fenced, errcode.ErrFenced) {
		t.Fatal("a fenced error must match ErrFenced")
	}
	if errors.Is(errcode.New(errcode.Unavailable, "stopping"), errcode.ErrFenced) {
		t.Fatal("an unavailable error is not fenced")
	}
	if errcode.Of(fenced) != errcode.Fenced {
		t.Fatalf("Of = %v, want fenced (internally the code is kept)", errcode.Of(fenced))
	}
}

func TestIsAcrossWrapping(t *testing.T) {
	for _, tc := range every[1:] {
		t.Run(tc.name, func(t *testing.T) {
			base := errcode.New(tc.code, "device %s", "d1")
			chain := map[string]error{
				"sentinel":            tc.sentinel,
				"new":                 base,
				"errorf %w once":      fmt.Errorf("load twin: %w", base),
				"errorf %w twice":     fmt.Errorf("request: %w", fmt.Errorf("load twin: %w", base)),
				"errorf sentinel":     fmt.Errorf("%w: device d1", tc.sentinel),
				"errors.Join":         errors.Join(io.EOF, base),
				"wrap of plain error": errcode.Wrap(tc.code, errors.New("disk full")),
			}
			for name, err := range chain {
				if !errors.Is(err, tc.sentinel) {
					t.Errorf("%s: errors.Is(%q, sentinel) = false", name, err)
				}
				if got := errcode.Of(err); got != tc.code {
					t.Errorf("%s: Of = %v, want %v", name, got, tc.code)
				}
				for _, other := range every[1:] {
					if other.code == tc.code || (other.code == errcode.Unavailable && tc.code == errcode.Fenced) {
						continue
					}
					if errors.Is(err, other.sentinel) {
						t.Errorf("%s: %v matches the sentinel of %v", name, tc.code, other.code)
					}
				}
			}
		})
	}
}

func TestIsNeedsABareSentinel(t *testing.T) {
	a := errcode.New(errcode.NotFound, "entity a")
	b := errcode.New(errcode.NotFound, "entity b")
	if errors.Is(a, b) {
		t.Fatal("an error with a message is not a sentinel: two not-found errors are different errors")
	}
	withCause := &errcode.Error{Code: errcode.NotFound, Err: io.EOF}
	if errors.Is(a, withCause) {
		t.Fatal("an error with a cause is not a sentinel")
	}
	if errors.Is(a, io.EOF) {
		t.Fatal("a coded error without cause matches an unrelated error")
	}
}

func TestNew(t *testing.T) {
	cause := errors.New("unexpected EOF")
	tests := []struct {
		name      string
		err       error
		code      errcode.Code
		msg       string
		wantCause error
	}{
		{"plain", errcode.New(errcode.BadRequest, "limit must be positive"), errcode.BadRequest, "limit must be positive", nil},
		{"formatted", errcode.New(errcode.NotFound, "entity %q", "b1"), errcode.NotFound, `entity "b1"`, nil},
		{"%v keeps no cause", errcode.New(errcode.BadRequest, "malformed JSON: %v", cause), errcode.BadRequest, "malformed JSON: unexpected EOF", nil},
		{"%w keeps the cause", errcode.New(errcode.BadRequest, "malformed JSON: %w", cause), errcode.BadRequest, "malformed JSON: unexpected EOF", cause},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if errcode.Of(tc.err) != tc.code {
				t.Errorf("Of = %v, want %v", errcode.Of(tc.err), tc.code)
			}
			if tc.err.Error() != tc.msg {
				t.Errorf("Error() = %q, want %q: New adds no prefix", tc.err.Error(), tc.msg)
			}
			if got := errors.Unwrap(tc.err); got != tc.wantCause {
				t.Errorf("Unwrap = %v, want %v", got, tc.wantCause)
			}
			if tc.wantCause != nil && !errors.Is(tc.err, tc.wantCause) {
				t.Errorf("errors.Is(err, cause) = false")
			}
		})
	}
}

func TestWrap(t *testing.T) {
	plain := errors.New("disk full")
	notFound := errcode.New(errcode.NotFound, "device d1")
	wrappedNotFound := fmt.Errorf("load: %w", notFound)
	tests := []struct {
		name     string
		code     errcode.Code
		err      error
		wantCode errcode.Code
		wantMsg  string
		same     bool // Wrap returned err itself
	}{
		{"plain error gets the code", errcode.Unavailable, plain, errcode.Unavailable, "disk full", false},
		{"internal on a plain error", errcode.Internal, plain, errcode.Internal, "disk full", false},
		{"internal keeps an existing code", errcode.Internal, notFound, errcode.NotFound, "device d1", true},
		{"internal keeps a wrapped code", errcode.Internal, wrappedNotFound, errcode.NotFound, "load: device d1", true},
		{"internal keeps a sentinel", errcode.Internal, errcode.ErrTimeout, errcode.Timeout, "device timeout", true},
		{"another code overrides", errcode.Conflict, notFound, errcode.Conflict, "device d1", false},
		{"same code again", errcode.NotFound, notFound, errcode.NotFound, "device d1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := errcode.Wrap(tc.code, tc.err)
			if errcode.Of(got) != tc.wantCode {
				t.Errorf("Of = %v, want %v", errcode.Of(got), tc.wantCode)
			}
			if got.Error() != tc.wantMsg {
				t.Errorf("Error() = %q, want %q: Wrap never adds a prefix", got.Error(), tc.wantMsg)
			}
			if (got == tc.err) != tc.same {
				t.Errorf("Wrap returned the same error: %v, want %v", got == tc.err, tc.same)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("the wrapped error is not reachable with errors.Is")
			}
		})
	}
	if errcode.Wrap(errcode.NotFound, nil) != nil {
		t.Fatal("Wrap(nil) must be nil")
	}
}

func TestOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want errcode.Code
	}{
		{"nil", nil, errcode.OK},
		{"plain", errors.New("boom"), errcode.Internal},
		{"context deadline", context.DeadlineExceeded, errcode.Internal},
		{"sentinel", errcode.ErrThrottled, errcode.Throttled},
		{"outermost wins", errcode.Wrap(errcode.BadRequest, errcode.New(errcode.NotFound, "x")), errcode.BadRequest},
		{"through errorf", fmt.Errorf("a: %w", fmt.Errorf("b: %w", errcode.ErrConflict)), errcode.Conflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errcode.Of(tc.err); got != tc.want {
				t.Fatalf("Of = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	if errcode.Message(nil) != "" {
		t.Fatal("Message(nil) must be empty")
	}
	if got := errcode.Message(errors.New("boom")); got != "boom" {
		t.Fatalf("Message = %q", got)
	}
	if got := errcode.Message(errcode.New(errcode.NotFound, "device d1")); got != "device d1" {
		t.Fatalf("Message = %q", got)
	}
}

// TestDefaultMessages: a bare sentinel reads as a short lower-case phrase,
// never empty and never its machine name's form with underscores.
func TestDefaultMessages(t *testing.T) {
	for _, tc := range every[1:] {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.sentinel.Error()
			if msg == "" || strings.Contains(msg, "_") || strings.ToLower(msg) != msg {
				t.Fatalf("sentinel message %q", msg)
			}
			if got := (&errcode.Error{Code: tc.code}).Error(); got != msg {
				t.Fatalf("a bare Error reads %q, the sentinel %q", got, msg)
			}
		})
	}
	if got := (&errcode.Error{Code: 1000}).Error(); got != "internal error" {
		t.Fatalf("unknown code reads %q", got)
	}
	if got := (&errcode.Error{Code: errcode.OK}).Error(); got != "internal error" {
		t.Fatalf("a bare OK error reads %q", got)
	}
}

// TestNoRepeatedPrefix: wrapping a sentinel the way the actor layer does
// ("%w: detail") reads the sentinel's phrase once, and crossing a member
// (the message travels and is rebuilt with its code) adds nothing.
func TestNoRepeatedPrefix(t *testing.T) {
	err := fmt.Errorf("%w: twin d1 is at version 3, not 2", errcode.ErrPrecondition)
	rebuilt := &errcode.Error{Code: errcode.Parse(errcode.Of(err).String()), Msg: errcode.Message(err)}
	if rebuilt.Error() != err.Error() {
		t.Fatalf("rebuilt %q, sent %q", rebuilt.Error(), err.Error())
	}
	if n := strings.Count(rebuilt.Error(), "version mismatch"); n != 1 {
		t.Fatalf("%q has the prefix %d times", rebuilt.Error(), n)
	}
	if wrapped := errcode.Wrap(errcode.Internal, rebuilt); wrapped.Error() != rebuilt.Error() {
		t.Fatalf("Wrap changed the message: %q", wrapped.Error())
	}
}

func ExampleNew() {
	err := fmt.Errorf("patch twin: %w", errcode.New(errcode.Precondition, "twin %s is at version %d, not %d", "d1", 7, 6))
	c := errcode.Of(err)
	fmt.Println(errors.Is(err, errcode.ErrPrecondition), c, c.HTTPStatus())
	fmt.Println(err)
	// Output:
	// true precondition_failed 412
	// patch twin: twin d1 is at version 7, not 6
}
