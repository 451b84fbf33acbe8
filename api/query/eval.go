package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// tri is a three-valued truth: false, true, or undefined.
type tri int8

const (
	undef tri = iota
	no
	yes
)

func truth(b bool) tri {
	if b {
		return yes
	}
	return no
}

// Match reports whether doc satisfies the query's condition.
func (q *Query) Match(doc map[string]any) bool {
	return q.Where == nil || q.Where.eval(doc) == yes
}

func (e *And) eval(doc map[string]any) tri {
	l := e.L.eval(doc)
	if l == no {
		return no
	}
	r := e.R.eval(doc)
	switch {
	case r == no:
		return no
	case l == yes && r == yes:
		return yes
	}
	return undef
}

func (e *Or) eval(doc map[string]any) tri {
	l := e.L.eval(doc)
	if l == yes {
		return yes
	}
	r := e.R.eval(doc)
	switch {
	case r == yes:
		return yes
	case l == no && r == no:
		return no
	}
	return undef
}

func (e *Not) eval(doc map[string]any) tri {
	switch e.X.eval(doc) {
	case yes:
		return no
	case no:
		return yes
	}
	return undef
}

func (o Operand) value(doc map[string]any) (any, bool) {
	if o.Path != nil {
		return o.Path.Lookup(doc)
	}
	return o.Value, true
}

func (e *Compare) eval(doc map[string]any) tri {
	l, ok := e.L.value(doc)
	if !ok {
		return undef
	}
	r, ok := e.R.value(doc)
	if !ok {
		return undef
	}
	c, ok := compare(l, r)
	if !ok {
		if e.Op == "=" || e.Op == "!=" {
			// Values of different types, or objects: equal only if the
			// same JSON value.
			if sameType(l, r) {
				return truth(reflect.DeepEqual(l, r) == (e.Op == "="))
			}
			if l == nil || r == nil { // a defined value is not null
				return truth(e.Op == "!=")
			}
		}
		return undef
	}
	switch e.Op {
	case "=":
		return truth(c == 0)
	case "!=":
		return truth(c != 0)
	case "<":
		return truth(c < 0)
	case "<=":
		return truth(c <= 0)
	case ">":
		return truth(c > 0)
	case ">=":
		return truth(c >= 0)
	}
	return undef
}

// compare orders two scalars of the same type: numbers, strings, booleans
// (false < true) and nulls (equal). ok is false for other pairs.
func compare(a, b any) (int, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	case bool:
		y, ok := b.(bool)
		if !ok {
			return 0, false
		}
		switch {
		case x == y:
			return 0, true
		case !x:
			return -1, true
		}
		return 1, true
	case nil:
		if b == nil {
			return 0, true
		}
	}
	return 0, false
}

func sameType(a, b any) bool { return reflect.TypeOf(a) == reflect.TypeOf(b) }

func (e *In) eval(doc map[string]any) tri {
	v, ok := e.Path.Lookup(doc)
	if !ok {
		return undef
	}
	found := false
	for _, w := range e.Values {
		if c, ok := compare(v, w); ok && c == 0 {
			found = true
			break
		}
	}
	return truth(found != e.Negate)
}

func (e *IsDefined) eval(doc map[string]any) tri {
	_, ok := e.Path.Lookup(doc)
	return truth(ok)
}

func (e *IsNull) eval(doc map[string]any) tri {
	v, ok := e.Path.Lookup(doc)
	return truth(ok && v == nil)
}

func (e *Affix) eval(doc map[string]any) tri {
	v, ok := e.Path.Lookup(doc)
	s, isStr := v.(string)
	if !ok || !isStr {
		return undef
	}
	if e.Suffix {
		return truth(strings.HasSuffix(s, e.Text))
	}
	return truth(strings.HasPrefix(s, e.Text))
}

// eval of UNDER is true: the store selected only entities below the ID
// (Hints.Under), and check allows UNDER nowhere else.
func (e *Under) eval(map[string]any) tri { return yes }

// Project returns what a query without aggregates answers for a matching
// document: the document itself for SELECT *, else an object with one
// member per field whose property is defined.
func (q *Query) Project(doc map[string]any) map[string]any {
	if q.Star {
		return doc
	}
	out := make(map[string]any, len(q.Fields))
	for _, f := range q.Fields {
		if v, ok := f.Path.Lookup(doc); ok {
			out[f.Name] = v
		}
	}
	return out
}

// ErrTooManyGroups is returned by Grouper.Add past MaxGroups groups.
var ErrTooManyGroups = errors.New("too many groups")

// MaxGroups bounds the groups of one query, and so its memory.
const MaxGroups = 10000

// Grouper counts matching documents per group of an aggregate query. It
// holds one entry per group, never the documents.
type Grouper struct {
	q      *Query
	groups map[string]*group
}

type group struct {
	values []any  // the group's value of each GROUP BY path
	set    []bool // whether that value is defined
	n      int
}

// NewGrouper returns a Grouper for an aggregate query.
func (q *Query) NewGrouper() *Grouper { return &Grouper{q: q, groups: map[string]*group{}} }

// Add counts doc in its group.
func (g *Grouper) Add(doc map[string]any) error {
	vals := make([]any, len(g.q.GroupBy))
	set := make([]bool, len(g.q.GroupBy))
	var key strings.Builder
	for i, p := range g.q.GroupBy {
		vals[i], set[i] = p.Lookup(doc)
		if set[i] {
			b, _ := json.Marshal(vals[i])
			key.Write(b)
		}
		key.WriteByte(0)
	}
	k := key.String()
	gr, ok := g.groups[k]
	if !ok {
		if len(g.groups) >= MaxGroups {
			return fmt.Errorf("%w: over %d distinct values of %s", ErrTooManyGroups, MaxGroups, g.q.GroupBy[0])
		}
		gr = &group{values: vals, set: set}
		g.groups[k] = gr
	}
	gr.n++
	return nil
}

// Rows returns one row per group (one in all without GROUP BY, even when
// nothing matched), ordered by the groups' values.
func (g *Grouper) Rows() []map[string]any {
	if len(g.q.GroupBy) == 0 && len(g.groups) == 0 {
		g.groups[""] = &group{}
	}
	keys := make([]string, 0, len(g.groups))
	for k := range g.groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		gr := g.groups[k]
		row := map[string]any{}
		for _, f := range g.q.Fields {
			if f.Count {
				row[f.Name] = gr.n
				continue
			}
			for i, p := range g.q.GroupBy {
				if gr.set[i] && p.String() == f.Path.String() {
					row[f.Name] = gr.values[i]
				}
			}
		}
		out = append(out, row)
	}
	return out
}

// Hints is what the store can check on an entity before its twin is read:
// conditions joined by AND at the top of WHERE that name the entity's kind,
// a top-level tag's string value, or a subtree. A twin the hints reject
// cannot match the query; one they accept still goes through Match.
type Hints struct {
	Kind  string
	Tags  map[string]string
	Under string
}

// Hints returns the query's hints.
func (q *Query) Hints() Hints {
	var h Hints
	var walk func(x Expr)
	walk = func(x Expr) {
		switch e := x.(type) {
		case *And:
			walk(e.L)
			walk(e.R)
		case *Under:
			h.Under = e.ID
		case *Compare:
			if e.Op != "=" {
				return
			}
			path, lit := e.L, e.R
			if path.Path == nil {
				path, lit = lit, path
			}
			s, ok := lit.Value.(string)
			if path.Path == nil || lit.Path != nil || !ok {
				return
			}
			switch {
			case len(path.Path) == 1 && path.Path[0] == "kind":
				h.Kind = s
			case len(path.Path) == 2 && path.Path[0] == "tags":
				if h.Tags == nil {
					h.Tags = map[string]string{}
				}
				h.Tags[path.Path[1]] = s
			}
		}
	}
	if q.Where != nil {
		walk(q.Where)
	}
	return h
}
