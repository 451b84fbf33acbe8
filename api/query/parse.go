package query

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse parses a query:
//
//	SELECT [TOP n] * | item [, item…] FROM devices
//	  [WHERE condition] [GROUP BY path [, path…]]
//	item      = path [AS name] | COUNT() [AS name]
//	condition = or
//	or        = and {OR and}
//	and       = unary {AND unary}
//	unary     = NOT unary | primary
//	primary   = ( condition ) | operand cmp operand | path [NOT] IN list | path NIN list
//	          | IS_DEFINED(path) | IS_NULL(path) | STARTS_WITH(path, string) | ENDS_WITH(path, string)
//	          | UNDER(string)
//	cmp       = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//	list      = [ literal {, literal} ]  (or parentheses)
//	operand   = path | literal;  literal = 'string' | number | true | false | null
//	path      = root {. segment};  root = deviceId | tags | properties.desired | properties.reported
//	          | status | connectionState | kind | parent | version | etag
//
// Keywords are case-insensitive; path segments are not. A malformed query
// is a *SyntaxError carrying the 1-based position of the error.
func Parse(src string) (*Query, error) {
	if len(src) > MaxLength {
		return nil, &SyntaxError{Pos: MaxLength + 1, Msg: fmt.Sprintf("a query is at most %d characters", MaxLength)}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	q, err := p.query()
	if err != nil {
		return nil, err
	}
	return q, nil
}

// MaxLength bounds the length of a query (IoT Hub's limit is 8 KiB).
const MaxLength = 8192

// maxDepth bounds the nesting of conditions, so that a hostile query cannot
// exhaust the stack.
const maxDepth = 64

type parser struct {
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(t token, format string, args ...any) error {
	return &SyntaxError{Pos: t.pos, Msg: fmt.Sprintf(format, args...)}
}

// isKeyword reports whether t is the keyword kw (case-insensitive).
func isKeyword(t token, kw string) bool { return t.kind == tIdent && strings.EqualFold(t.text, kw) }

func (p *parser) acceptKeyword(kw string) bool {
	if isKeyword(p.peek(), kw) {
		p.i++
		return true
	}
	return false
}

func (p *parser) expectKeyword(kw string) error {
	if t := p.next(); !isKeyword(t, kw) {
		return p.errAt(t, "expected %s, found %s", kw, describe(t))
	}
	return nil
}

func (p *parser) acceptPunct(s string) bool {
	if t := p.peek(); t.kind == tPunct && t.text == s {
		p.i++
		return true
	}
	return false
}

func (p *parser) expectPunct(s string) error {
	if t := p.next(); t.kind != tPunct || t.text != s {
		return p.errAt(t, "expected %q, found %s", s, describe(t))
	}
	return nil
}

func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "the end of the query"
	case tString:
		return fmt.Sprintf("string %q", t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

// reserved words cannot start a path.
var reserved = map[string]bool{"select": true, "from": true, "where": true, "and": true, "or": true, "not": true,
	"in": true, "nin": true, "group": true, "by": true, "as": true, "top": true}

func (p *parser) query() (*Query, error) {
	q := &Query{}
	if err := p.expectKeyword("SELECT"); err != nil {
		return nil, err
	}
	if p.acceptKeyword("TOP") {
		t := p.next()
		n, err := strconv.Atoi(t.text)
		if t.kind != tNumber || err != nil || n < 1 {
			return nil, p.errAt(t, "TOP takes a positive whole number, found %s", describe(t))
		}
		q.Top = n
	}
	if p.acceptPunct("*") {
		q.Star = true
	} else {
		for {
			f, err := p.field()
			if err != nil {
				return nil, err
			}
			q.Fields = append(q.Fields, f)
			if !p.acceptPunct(",") {
				break
			}
		}
	}
	if err := p.expectKeyword("FROM"); err != nil {
		return nil, err
	}
	if t := p.next(); !isKeyword(t, "devices") {
		return nil, p.errAt(t, "expected devices after FROM, found %s", describe(t))
	}
	if p.acceptKeyword("WHERE") {
		w, err := p.or()
		if err != nil {
			return nil, err
		}
		q.Where = w
	}
	if t := p.peek(); isKeyword(t, "GROUP") {
		p.next()
		if err := p.expectKeyword("BY"); err != nil {
			return nil, err
		}
		for {
			path, err := p.path()
			if err != nil {
				return nil, err
			}
			q.GroupBy = append(q.GroupBy, path)
			if !p.acceptPunct(",") {
				break
			}
		}
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, p.errAt(t, "unexpected %s", describe(t))
	}
	return q, q.check(p)
}

// check verifies what the grammar alone does not: aggregates and grouping
// agree, names are unique, UNDER only where the store can honour it.
func (q *Query) check(p *parser) error {
	end := p.peek()
	names := map[string]bool{}
	for _, f := range q.Fields {
		if f.Count {
			q.Aggregate = true
		}
		if names[f.Name] {
			return p.errAt(end, "two columns are named %q: give one another name with AS", f.Name)
		}
		names[f.Name] = true
	}
	if len(q.GroupBy) > 0 && !q.Aggregate {
		return p.errAt(end, "GROUP BY needs COUNT() in the SELECT list")
	}
	if q.Star && len(q.GroupBy) > 0 {
		return p.errAt(end, "SELECT * cannot be grouped")
	}
	if q.Aggregate {
		for _, f := range q.Fields {
			if f.Count {
				continue
			}
			grouped := false
			for _, g := range q.GroupBy {
				grouped = grouped || g.String() == f.Path.String()
			}
			if !grouped {
				return p.errAt(end, "%s is selected with COUNT() but not in GROUP BY", f.Path)
			}
		}
	}
	if q.Where != nil && containsUnder(q.Where, false) {
		return p.errAt(end, "UNDER(...) may only be one of the conditions joined by AND at the top of WHERE")
	}
	if q.Where != nil && countUnder(q.Where) > 1 {
		return p.errAt(end, "UNDER(...) may appear once")
	}
	return nil
}

func (p *parser) field() (Field, error) {
	t := p.peek()
	var f Field
	if isKeyword(t, "COUNT") && p.toks[p.i+1].text == "(" {
		p.i++
		if err := p.expectPunct("("); err != nil {
			return f, err
		}
		if err := p.expectPunct(")"); err != nil {
			return f, err
		}
		f.Count, f.Name = true, "$1" // IoT Hub's name for an unnamed aggregate
	} else {
		path, err := p.path()
		if err != nil {
			return f, err
		}
		f.Path, f.Name = path, path[len(path)-1]
	}
	if p.acceptKeyword("AS") {
		t := p.next()
		if t.kind != tIdent {
			return f, p.errAt(t, "expected a name after AS, found %s", describe(t))
		}
		f.Name = t.text
	}
	return f, nil
}

// roots are the top-level members a path may start with.
var roots = map[string]bool{"deviceId": true, "tags": true, "properties": true, "status": true,
	"connectionState": true, "kind": true, "parent": true, "version": true, "etag": true}

func (p *parser) path() (Path, error) {
	t := p.next()
	if t.kind != tIdent || reserved[strings.ToLower(t.text)] {
		return nil, p.errAt(t, "expected a property path, found %s", describe(t))
	}
	if !roots[t.text] {
		return nil, p.errAt(t, "unknown property %q: a path starts with deviceId, tags, properties.desired, properties.reported, status, connectionState, kind, parent, version or etag", t.text)
	}
	path := Path{t.text}
	for p.acceptPunct(".") {
		s := p.next()
		if s.kind != tIdent && s.kind != tNumber {
			return nil, p.errAt(s, "expected a property name after \".\", found %s", describe(s))
		}
		path = append(path, s.text)
	}
	for p.peek().text == "[" && p.peek().kind == tPunct && p.toks[p.i+1].kind == tString {
		// tags['name with spaces']
		p.next()
		path = append(path, p.next().text)
		if err := p.expectPunct("]"); err != nil {
			return nil, err
		}
		for p.acceptPunct(".") {
			s := p.next()
			if s.kind != tIdent && s.kind != tNumber {
				return nil, p.errAt(s, "expected a property name after \".\", found %s", describe(s))
			}
			path = append(path, s.text)
		}
	}
	if path[0] == "properties" && (len(path) < 2 || (path[1] != "desired" && path[1] != "reported")) {
		return nil, p.errAt(t, "properties must be followed by .desired or .reported")
	}
	return path, nil
}

func (p *parser) enter(t token) error {
	p.depth++
	if p.depth > maxDepth {
		return p.errAt(t, "conditions nested more than %d deep", maxDepth)
	}
	return nil
}

func (p *parser) or() (Expr, error) {
	if err := p.enter(p.peek()); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.acceptKeyword("OR") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &Or{L: l, R: r}
	}
	return l, nil
}

func (p *parser) and() (Expr, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.acceptKeyword("AND") {
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &And{L: l, R: r}
	}
	return l, nil
}

func (p *parser) unary() (Expr, error) {
	if t := p.peek(); isKeyword(t, "NOT") {
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &Not{X: x}, nil
	}
	return p.primary()
}

// functions are the boolean functions of a condition, by upper-case name.
var functions = map[string]bool{"IS_DEFINED": true, "IS_NULL": true, "STARTS_WITH": true, "ENDS_WITH": true, "UNDER": true}

func (p *parser) primary() (Expr, error) {
	t := p.peek()
	if t.kind == tPunct && t.text == "(" {
		p.next()
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		return x, p.expectPunct(")")
	}
	if t.kind == tIdent && functions[strings.ToUpper(t.text)] && p.toks[p.i+1].text == "(" {
		return p.function()
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	op := p.next()
	switch {
	case op.kind == tPunct && isComparison(op.text):
		r, err := p.operand()
		if err != nil {
			return nil, err
		}
		text := op.text
		if text == "<>" {
			text = "!="
		}
		return &Compare{Op: text, L: l, R: r}, nil
	case isKeyword(op, "IN") || isKeyword(op, "NIN") || (isKeyword(op, "NOT") && isKeyword(p.peek(), "IN")):
		if isKeyword(op, "NOT") {
			p.next()
		}
		if l.Path == nil {
			return nil, p.errAt(op, "IN needs a property path on its left")
		}
		vals, err := p.list()
		if err != nil {
			return nil, err
		}
		return &In{Path: l.Path, Values: vals, Negate: !isKeyword(op, "IN")}, nil
	}
	return nil, p.errAt(op, "expected a comparison (= != < <= > >=) or IN, found %s", describe(op))
}

func isComparison(s string) bool {
	switch s {
	case "=", "!=", "<>", "<", "<=", ">", ">=":
		return true
	}
	return false
}

func (p *parser) function() (Expr, error) {
	name := strings.ToUpper(p.next().text)
	if err := p.expectPunct("("); err != nil {
		return nil, err
	}
	var f Expr
	switch name {
	case "UNDER":
		t := p.next()
		if t.kind != tString {
			return nil, p.errAt(t, "UNDER takes an entity ID in quotes, found %s", describe(t))
		}
		f = &Under{ID: t.text}
	default:
		path, err := p.path()
		if err != nil {
			return nil, err
		}
		switch name {
		case "IS_DEFINED":
			f = &IsDefined{Path: path}
		case "IS_NULL":
			f = &IsNull{Path: path}
		default:
			if err := p.expectPunct(","); err != nil {
				return nil, err
			}
			t := p.next()
			if t.kind != tString {
				return nil, p.errAt(t, "%s takes a string as its second argument, found %s", name, describe(t))
			}
			f = &Affix{Path: path, Text: t.text, Suffix: name == "ENDS_WITH"}
		}
	}
	return f, p.expectPunct(")")
}

func (p *parser) list() ([]any, error) {
	open := p.next()
	closeWith := map[string]string{"[": "]", "(": ")"}[open.text]
	if open.kind != tPunct || closeWith == "" {
		return nil, p.errAt(open, "expected a list such as ['a', 'b'], found %s", describe(open))
	}
	var vals []any
	if p.acceptPunct(closeWith) {
		return vals, nil
	}
	for {
		t := p.peek()
		o, err := p.operand()
		if err != nil {
			return nil, err
		}
		if o.Path != nil {
			return nil, p.errAt(t, "a list holds literals, not paths")
		}
		vals = append(vals, o.Value)
		if p.acceptPunct(closeWith) {
			return vals, nil
		}
		if err := p.expectPunct(","); err != nil {
			return nil, err
		}
	}
}

func (p *parser) operand() (Operand, error) {
	t := p.peek()
	switch {
	case t.kind == tString:
		p.next()
		return Operand{Value: t.text}, nil
	case t.kind == tNumber:
		p.next()
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return Operand{}, p.errAt(t, "bad number %q", t.text)
		}
		return Operand{Value: f}, nil
	case isKeyword(t, "true"):
		p.next()
		return Operand{Value: true}, nil
	case isKeyword(t, "false"):
		p.next()
		return Operand{Value: false}, nil
	case isKeyword(t, "null"):
		p.next()
		return Operand{Value: nil, Null: true}, nil
	}
	path, err := p.path()
	if err != nil {
		return Operand{}, err
	}
	return Operand{Path: path}, nil
}
