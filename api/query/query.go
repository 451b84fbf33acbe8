// Package query is IoT Hub's query language over device twins (CONTRACT
// section 9): a hand-written recursive-descent parser (Parse), the
// evaluation of a condition against one twin document (Query.Match), the
// projection of a match (Query.Project), COUNT() with GROUP BY (Grouper),
// and the part of a condition that the store can use to skip entities
// before their twins are read (Query.Hints).
//
// The package is pure: it reads documents it is handed and does no IO, so
// the caller decides how twins are streamed. A document is the IoT Hub
// shape of a twin, decoded from JSON (numbers are float64):
//
//	{"deviceId","kind","parent","etag","version","status","connectionState",
//	 "tags":{…},"properties":{"desired":{…},"reported":{…}}}
//
// Conditions use three-valued logic as IoT Hub does: a comparison with an
// undefined property, or between values of different types, is neither true
// nor false, NOT of it is still undefined, and only a condition that is true
// selects a twin.
package query

import (
	"fmt"
	"strings"
)

// SyntaxError is a malformed query: Pos is the 1-based position (in bytes)
// of the token where parsing failed.
type SyntaxError struct {
	Pos int
	Msg string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("syntax error at position %d: %s", e.Pos, e.Msg)
}

// Query is a parsed query.
type Query struct {
	// Star is SELECT *: the whole document.
	Star bool
	// Top, when not 0, bounds the number of results.
	Top int
	// Fields are the projections when Star is false.
	Fields []Field
	// Where is the condition; nil selects every twin.
	Where Expr
	// GroupBy are the paths results are grouped by.
	GroupBy []Path
	// Aggregate is true when a field is COUNT(): the query answers one row
	// per group (one row in all without GROUP BY).
	Aggregate bool
}

// Field is one projection: a path or COUNT(), and the name of its column.
type Field struct {
	Path  Path
	Count bool
	Name  string
}

// Path is a property path: its segments, the first one a root
// ("deviceId", "tags", "properties", …).
type Path []string

// String returns the path as written, segments joined by dots.
func (p Path) String() string { return strings.Join(p, ".") }

// Lookup returns the value at the path in doc, and whether it is defined.
func (p Path) Lookup(doc map[string]any) (any, bool) {
	var cur any = doc
	for _, seg := range p {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Expr is a condition.
type Expr interface {
	eval(doc map[string]any) tri
}

// And is L AND R.
type And struct{ L, R Expr }

// Or is L OR R.
type Or struct{ L, R Expr }

// Not is NOT X.
type Not struct{ X Expr }

// Compare is L Op R, Op one of = != < <= > >=.
type Compare struct {
	Op   string
	L, R Operand
}

// Operand is a path or a literal (a string, float64, bool, or null).
type Operand struct {
	Path  Path
	Value any
	Null  bool
}

// In is Path IN Values, or NIN / NOT IN when Negate.
type In struct {
	Path   Path
	Values []any
	Negate bool
}

// IsDefined is IS_DEFINED(Path).
type IsDefined struct{ Path Path }

// IsNull is IS_NULL(Path): true when the property is defined and null.
type IsNull struct{ Path Path }

// Affix is STARTS_WITH(Path, Text), or ENDS_WITH when Suffix.
type Affix struct {
	Path   Path
	Text   string
	Suffix bool
}

// Under is UNDER('id'), a twinmesh extension: the twin's entity is strictly
// below id in the topology. A document does not hold its ancestors, so
// Under is honoured by the store (Hints.Under) and only allowed where that
// is exact: as one of the conditions joined by AND at the top of WHERE.
type Under struct{ ID string }

// containsUnder reports whether x holds an UNDER other than in the
// top-level conjunction (nested is true below OR or NOT).
func containsUnder(x Expr, nested bool) bool {
	switch e := x.(type) {
	case *Under:
		return nested
	case *And:
		return containsUnder(e.L, nested) || containsUnder(e.R, nested)
	case *Or:
		return containsUnder(e.L, true) || containsUnder(e.R, true)
	case *Not:
		return containsUnder(e.X, true)
	}
	return false
}

func countUnder(x Expr) int {
	switch e := x.(type) {
	case *Under:
		return 1
	case *And:
		return countUnder(e.L) + countUnder(e.R)
	}
	return 0
}

// Needs reports which sections of a twin the query reads: "tags",
// "properties.desired", "properties.reported" (the others are cheap and
// always there). SELECT * needs every section.
func (q *Query) Needs() map[string]bool {
	all := map[string]bool{"tags": true, "properties.desired": true, "properties.reported": true}
	if q.Star {
		return all
	}
	need := map[string]bool{}
	add := func(p Path) {
		switch {
		case len(p) == 0:
		case p[0] == "tags":
			need["tags"] = true
		case p[0] == "properties" && len(p) > 1:
			need["properties."+p[1]] = true
		}
	}
	for _, f := range q.Fields {
		add(f.Path)
	}
	for _, g := range q.GroupBy {
		add(g)
	}
	var walk func(x Expr)
	walk = func(x Expr) {
		switch e := x.(type) {
		case *And:
			walk(e.L)
			walk(e.R)
		case *Or:
			walk(e.L)
			walk(e.R)
		case *Not:
			walk(e.X)
		case *Compare:
			add(e.L.Path)
			add(e.R.Path)
		case *In:
			add(e.Path)
		case *IsDefined:
			add(e.Path)
		case *IsNull:
			add(e.Path)
		case *Affix:
			add(e.Path)
		}
	}
	if q.Where != nil {
		walk(q.Where)
	}
	return need
}
