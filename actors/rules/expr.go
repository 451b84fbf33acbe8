package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"
)

// AnomalyResult is the outcome of anomaly detection on one sample, seen by
// conditions as "anomaly" (anomaly.score, anomaly.isAnomaly, anomaly.spike,
// anomaly.dip).
type AnomalyResult struct {
	// Score is the robust z-score |x-median|/(1.4826·MAD) of the sample
	// against the history (0 until the history holds MinAnomalyHistory
	// samples; capped at MaxAnomalyScore).
	Score float64 `expr:"score" json:"score"`
	// IsAnomaly is Spike, Dip or either, according to the rule's mode.
	IsAnomaly bool `expr:"isAnomaly" json:"isAnomaly"`
	// Spike: the sample is above the median by at least the threshold.
	Spike bool `expr:"spike" json:"spike"`
	// Dip: the sample is below the median by at least the threshold.
	Dip bool `expr:"dip" json:"dip"`
}

// evalEnv is the expression environment. The compiler sees its type, so
// the top-level names are checked at compile time (a typo such as
// "telemetri.x" is refused) while the contents of the maps are dynamic.
type evalEnv struct {
	Telemetry map[string]any `expr:"telemetry"`
	Reported  map[string]any `expr:"reported"`
	Desired   map[string]any `expr:"desired"`
	Tags      map[string]any `expr:"tags"`
	Rollup    map[string]any `expr:"rollup"`
	Window    float64        `expr:"window"`
	Anomaly   AnomalyResult  `expr:"anomaly"`
	helpers
}

// helpers are the targets of the nil-safety rewrite. They are fields of
// the environment rather than expr.Function options because the VM calls
// a func-typed field with a signature it knows (func(any, any) bool, ...)
// directly, without the argument buffer it allocates on every run that
// calls an expr.Function. They fail by panicking, which the VM turns into
// an error. The '$' in their names keeps them apart from anything a rule
// author would name.
type helpers struct {
	LT         func(a, b any) bool `expr:"$lt"`
	LE         func(a, b any) bool `expr:"$le"`
	GT         func(a, b any) bool `expr:"$gt"`
	GE         func(a, b any) bool `expr:"$ge"`
	EQ         func(a, b any) bool `expr:"$eq"`
	NE         func(a, b any) bool `expr:"$ne"`
	Add        func(a, b any) any  `expr:"$add"`
	Sub        func(a, b any) any  `expr:"$sub"`
	Mul        func(a, b any) any  `expr:"$mul"`
	Div        func(a, b any) any  `expr:"$div"`
	Mod        func(a, b any) any  `expr:"$mod"`
	Pow        func(a, b any) any  `expr:"$pow"`
	Neg        func(a any) any     `expr:"$neg"`
	Bool       func(a any) bool    `expr:"$bool"`
	Get        func(m, k any) any  `expr:"$get"`
	Contains   func(a, b any) bool `expr:"$contains"`
	StartsWith func(a, b any) bool `expr:"$startsWith"`
	EndsWith   func(a, b any) bool `expr:"$endsWith"`
}

var stdHelpers = helpers{
	LT:  cmpFunc(func(c int) bool { return c < 0 }),
	LE:  cmpFunc(func(c int) bool { return c <= 0 }),
	GT:  cmpFunc(func(c int) bool { return c > 0 }),
	GE:  cmpFunc(func(c int) bool { return c >= 0 }),
	EQ:  eqFunc(true),
	NE:  eqFunc(false),
	Add: arithFunc(runtime.Add),
	Sub: arithFunc(runtime.Subtract),
	Mul: arithFunc(runtime.Multiply),
	Div: arithFunc(func(a, b any) any { return runtime.Divide(a, b) }),
	Mod: arithFunc(func(a, b any) any { return runtime.Modulo(a, b) }),
	Pow: arithFunc(func(a, b any) any { return runtime.Exponent(a, b) }),
	Neg: func(a any) any {
		if a == nil {
			return nil
		}
		return runtime.Negate(a)
	},
	Bool:       truth,
	Get:        get,
	Contains:   strFunc(strings.Contains),
	StartsWith: strFunc(strings.HasPrefix),
	EndsWith:   strFunc(strings.HasSuffix),
}

// Env keys read from Input.Env.
const (
	EnvTelemetry = "telemetry"
	EnvReported  = "reported"
	EnvDesired   = "desired"
	EnvTags      = "tags"
	EnvRollup    = "rollup"
)

// fill points the environment at the caller's maps (no copy).
func (e *evalEnv) fill(env map[string]any, telemetry map[string]any) {
	if e.LT == nil {
		e.helpers = stdHelpers
	}
	e.Telemetry = asMap(env[EnvTelemetry])
	if e.Telemetry == nil {
		e.Telemetry = telemetry
	}
	e.Reported = asMap(env[EnvReported])
	e.Desired = asMap(env[EnvDesired])
	e.Tags = asMap(env[EnvTags])
	e.Rollup = asMap(env[EnvRollup])
}

// reset drops the references to the caller's maps.
func (e *evalEnv) reset() {
	e.Telemetry, e.Reported, e.Desired, e.Tags, e.Rollup = nil, nil, nil, nil, nil
}

// asMap accepts map[string]any as is and converts the two other map types
// a host is likely to hold; anything else is treated as absent.
func asMap(v any) map[string]any {
	switch m := v.(type) {
	case map[string]any:
		return m
	case map[string]string:
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[k] = x
		}
		return out
	case map[string]float64:
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[k] = x
		}
		return out
	}
	return nil
}

// envVars says which optional variables a rule's expressions may use.
type envVars struct{ window, anomaly bool }

// exprOptions are the options of every compilation.
var exprOptions = []expr.Option{
	expr.Env(evalEnv{}),
	expr.AsBool(),
}

// Names of the helpers, as tagged in [helpers].
const (
	fnLT       = "$lt"
	fnLE       = "$le"
	fnGT       = "$gt"
	fnGE       = "$ge"
	fnEQ       = "$eq"
	fnNE       = "$ne"
	fnAdd      = "$add"
	fnSub      = "$sub"
	fnMul      = "$mul"
	fnDiv      = "$div"
	fnMod      = "$mod"
	fnPow      = "$pow"
	fnNeg      = "$neg"
	fnBool     = "$bool"
	fnGet      = "$get"
	fnContains = "$contains"
	fnStarts   = "$startsWith"
	fnEnds     = "$endsWith"
)

var (
	binaryRewrite = map[string]string{
		"<": fnLT, "<=": fnLE, ">": fnGT, ">=": fnGE,
		"==": fnEQ, "!=": fnNE,
		"+": fnAdd, "-": fnSub, "*": fnMul, "/": fnDiv, "%": fnMod, "**": fnPow, "^": fnPow,
		"contains": fnContains, "startsWith": fnStarts, "endsWith": fnEnds,
	}
	logical = map[string]bool{"and": true, "&&": true, "or": true, "||": true}
)

// compileExpr compiles one condition.
func compileExpr(field, src string, vars envVars) (p *program, err error) {
	if len(src) > MaxExprLen {
		return nil, &CompileError{Field: field, Message: fmt.Sprintf("expression is %d bytes, more than %d", len(src), MaxExprLen), Line: 1, Column: 1}
	}
	defer func() {
		if r := recover(); r != nil { // a compiler bug must not take the API down
			p, err = nil, &CompileError{Field: field, Message: fmt.Sprintf("internal compiler error: %v", r), Line: 1, Column: 1}
		}
	}()
	// Compile the expression as written first: the checker forgets errors
	// inside function arguments on the passes that follow a patch, so the
	// patched compilation alone would let "$gt(unknownName, 3)" through.
	if _, err := expr.Compile(src, exprOptions...); err != nil {
		return nil, compileError(field, err)
	}
	nv := &nilSafety{vars: vars}
	opts := append(exprOptions[:len(exprOptions):len(exprOptions)], expr.Patch(nv))
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, compileError(field, err)
	}
	if nv.err != nil {
		return nil, compileError(field, nv.err.Bind(file.NewSource(src)))
	}
	return &program{field: field, source: src, prog: prog, points: nv.points}, nil
}

// compileError converts an expr error into a *CompileError.
func compileError(field string, err error) *CompileError {
	var fe *file.Error
	if errors.As(err, &fe) {
		ce := &CompileError{Field: field, Message: fe.Message, Line: fe.Line, Column: fe.Column + 1, Snippet: fe.Snippet}
		if ce.Line == 0 {
			ce.Line, ce.Column = 1, 1
		}
		return ce
	}
	return &CompileError{Field: field, Message: err.Error(), Line: 1, Column: 1}
}

// nilSafety is the AST patcher that gives missing values their meaning (see
// the package documentation): member access on a map or an unknown value
// becomes a nil-safe lookup, and the operators that would fail on nil are replaced
// by helpers that treat a missing operand as described. It also records the
// telemetry points named and refuses "window"/"anomaly" on rules without a
// window/anomaly.
type nilSafety struct {
	vars   envVars
	points []string
	err    *file.Error
}

var mapType = reflect.TypeFor[map[string]any]()

func unknown(n ast.Node) bool {
	t := n.Type()
	return t == nil || t.Kind() == reflect.Interface
}

func isNil(n ast.Node) bool {
	_, ok := n.(*ast.NilNode)
	return ok
}

func (v *nilSafety) fail(n ast.Node, format string, args ...any) {
	if v.err == nil {
		v.err = &file.Error{Location: n.Location(), Message: fmt.Sprintf(format, args...)}
	}
}

func call(fn string, args ...ast.Node) ast.Node {
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: args}
}

func wrapBool(n *ast.Node) {
	if unknown(*n) {
		ast.Patch(n, call(fnBool, *n))
	}
}

// Visit implements ast.Visitor; ast.Walk calls it children first.
func (v *nilSafety) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch n.Value {
		case "window":
			if !v.vars.window {
				v.fail(n, "window is available only in a rule with a window")
			}
		case "anomaly":
			if !v.vars.anomaly {
				v.fail(n, "anomaly is available only in a rule with anomaly detection")
			}
		case "$env":
			v.fail(n, "$env is not supported; use telemetry, reported, desired, tags or rollup")
		}
	case *ast.MemberNode:
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == EnvTelemetry {
			if s, ok := n.Property.(*ast.StringNode); ok && !containsString(v.points, s.Value) {
				v.points = append(v.points, s.Value)
			}
		}
		if !n.Method && (unknown(n.Node) || n.Node.Type() == mapType) {
			ast.Patch(node, call(fnGet, n.Node, n.Property))
		}
	case *ast.BinaryNode:
		if logical[n.Operator] {
			wrapBool(&n.Left)
			wrapBool(&n.Right)
			return
		}
		fn, ok := binaryRewrite[n.Operator]
		if !ok || !(unknown(n.Left) || unknown(n.Right)) {
			return
		}
		if (n.Operator == "==" || n.Operator == "!=") && (isNil(n.Left) || isNil(n.Right)) {
			return // an explicit nil test keeps its meaning
		}
		ast.Patch(node, call(fn, n.Left, n.Right))
	case *ast.UnaryNode:
		switch n.Operator {
		case "!", "not":
			wrapBool(&n.Node)
		case "-":
			if unknown(n.Node) {
				ast.Patch(node, call(fnNeg, n.Node))
			}
		}
	case *ast.ConditionalNode:
		wrapBool(&n.Cond)
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// toFloat converts any Go number to float64.
func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float32:
		return float64(x), true
	case int32:
		return float64(x), true
	case int16:
		return float64(x), true
	case int8:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint8:
		return float64(x), true
	}
	return 0, false
}

// cmpFunc builds a nil-safe ordering comparison: false when an operand is
// missing (or NaN); numbers compare as float64, strings bytewise; other
// pairs get expr's own semantics, which fail on mismatched types.
func cmpFunc(ok func(c int) bool) func(a, b any) bool {
	return func(a, b any) bool {
		if a == nil || b == nil {
			return false
		}
		if x, isNum := toFloat(a); isNum {
			if y, isNum := toFloat(b); isNum {
				switch {
				case x < y:
					return ok(-1)
				case x > y:
					return ok(1)
				case x == y:
					return ok(0)
				}
				return false // NaN
			}
		}
		if x, isStr := a.(string); isStr {
			if y, isStr := b.(string); isStr {
				return ok(strings.Compare(x, y))
			}
		}
		switch {
		case runtime.Less(a, b):
			return ok(-1)
		case runtime.More(a, b):
			return ok(1)
		}
		return ok(0)
	}
}

// eqFunc builds a nil-safe equality: false when an operand is missing.
func eqFunc(eq bool) func(a, b any) bool {
	return func(a, b any) bool {
		if a == nil || b == nil {
			return false
		}
		return runtime.Equal(a, b) == eq
	}
}

// arithFunc builds a nil-propagating arithmetic operator.
func arithFunc(op func(a, b any) any) func(a, b any) any {
	return func(a, b any) any {
		if a == nil || b == nil {
			return nil
		}
		return op(a, b)
	}
}

// get is nil-safe member access: m.k or m[k] is nil when m is nil or has
// no k. map[string]any, which is what twins are made of, is read directly;
// anything else goes through expr's reflective fetch.
func get(m, k any) any {
	switch x := m.(type) {
	case nil:
		return nil
	case map[string]any:
		key, _ := k.(string)
		return x[key]
	}
	return fetch(m, k)
}

// fetch is runtime.Fetch with failures (no such field, index out of
// range) turned into nil.
func fetch(from, key any) (v any) {
	defer func() {
		if recover() != nil {
			v = nil
		}
	}()
	return runtime.Fetch(from, key)
}

// truth is the value of x in a boolean context: missing is false.
func truth(x any) bool {
	switch v := x.(type) {
	case nil:
		return false
	case bool:
		return v
	default:
		panic(fmt.Sprintf("expected bool, got %T", v))
	}
}

func strFunc(f func(s, sub string) bool) func(a, b any) bool {
	return func(a, b any) bool {
		if a == nil || b == nil {
			return false
		}
		s, ok1 := a.(string)
		sub, ok2 := b.(string)
		if !ok1 || !ok2 {
			panic(fmt.Sprintf("expected strings, got %T and %T", a, b))
		}
		return f(s, sub)
	}
}

// eval runs the program on the environment with the caller's VM.
func (p *program) eval(m *vm.VM, env *evalEnv) (bool, error) {
	out, err := m.Run(p.prog, env)
	if err != nil {
		return false, err
	}
	b, _ := out.(bool)
	return b, nil
}
