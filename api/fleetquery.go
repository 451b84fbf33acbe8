package api

// POST /api/v1/query: IoT Hub's query language over twins (CONTRACT
// section 9), evaluated by package query over the store, page by page.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/query"
	"github.com/twinmesh/twinmesh/persistence"
)

// scanPage is how many entities one store read transaction of a query
// covers: large enough to amortise the transaction, small enough that a
// page of twins is a few hundred kilobytes.
const scanPage = 256

// ContinuationHeader carries a query's continuation token, as IoT Hub's
// service API does; POST /api/v1/query also takes and answers it in the
// body.
const ContinuationHeader = "x-ms-continuation"

type queryBody struct {
	Query        string `json:"query"`
	PageSize     int    `json:"pageSize"`
	Continuation string `json:"continuation"`
}

// QueryPage is one page of a query's results.
type QueryPage struct {
	Items        []map[string]any `json:"items"`
	Continuation string           `json:"continuation,omitempty"`
}

// queryCursor is what a continuation token holds: the query it belongs to
// (a hash, so that a token is not replayed against another query), the ID
// of the last twin answered, and how many results were answered so far
// (for TOP).
type queryCursor struct {
	Query string `json:"q"`
	After string `json:"a"`
	Done  int    `json:"n"`
}

func queryHash(src string) string {
	h := sha256.Sum256([]byte(src))
	return base64.RawURLEncoding.EncodeToString(h[:9])
}

// syntaxErrorBody is the 400 of a malformed query: the error of CONTRACT
// section 2 with the position of the error.
type syntaxErrorBody struct {
	Error struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Position int    `json:"position"`
	} `json:"error"`
}

func writeSyntaxError(w http.ResponseWriter, se *query.SyntaxError) {
	var b syntaxErrorBody
	b.Error.Code, b.Error.Message, b.Error.Position = errcode.BadRequest.String(), se.Error(), se.Pos
	writeJSON(w, http.StatusBadRequest, b)
}

// query answers POST /api/v1/query.
func (s *Server) query(w http.ResponseWriter, r *http.Request) error {
	var b queryBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.Continuation == "" {
		b.Continuation = r.Header.Get(ContinuationHeader)
	}
	page, err := s.runQuery(r.Context(), b, func(f *persistence.EntityFilter) error { return s.scopeEntities(r, f) })
	var se *query.SyntaxError
	if errors.As(err, &se) {
		writeSyntaxError(w, se)
		return nil
	}
	if err != nil {
		return err
	}
	if page.Continuation != "" {
		w.Header().Set(ContinuationHeader, page.Continuation)
	}
	writeJSON(w, 200, page)
	return nil
}

// Query runs one page of a fleet query over the whole tree, for callers
// that authorised the request themselves (the IoT Hub service API, package
// iothub); an error that QueryBadRequest reports is the caller's fault.
func (s *Server) Query(ctx context.Context, q string, pageSize int, continuation string) ([]map[string]any, string, error) {
	page, err := s.runQuery(ctx, queryBody{Query: q, PageSize: pageSize, Continuation: continuation},
		func(*persistence.EntityFilter) error { return nil })
	return page.Items, page.Continuation, err
}

// QueryBadRequest reports whether an error of Query is the caller's fault:
// a malformed query, page size or continuation token.
func QueryBadRequest(err error) bool {
	var se *query.SyntaxError
	return errors.As(err, &se) || errcode.Of(err) == errcode.BadRequest
}

// runQuery parses b.Query and answers one page of it; scope narrows the
// store's filter to what the caller may see.
func (s *Server) runQuery(ctx context.Context, b queryBody, scope func(*persistence.EntityFilter) error) (QueryPage, error) {
	q, err := query.Parse(b.Query)
	if err != nil {
		return QueryPage{}, err
	}
	if b.PageSize == 0 {
		b.PageSize = 100
	}
	if b.PageSize < 1 || b.PageSize > 1000 {
		return QueryPage{}, errcode.New(errcode.BadRequest, "pageSize must be between 1 and 1000")
	}
	cur := queryCursor{Query: queryHash(b.Query)}
	if b.Continuation != "" {
		raw, err := base64.RawURLEncoding.DecodeString(b.Continuation)
		var got queryCursor
		if err != nil || json.Unmarshal(raw, &got) != nil || got.Query != cur.Query {
			return QueryPage{}, errcode.New(errcode.BadRequest, "continuation token is malformed or belongs to another query")
		}
		cur = got
	}
	h := q.Hints()
	f := persistence.EntityFilter{Kind: h.Kind, Tags: h.Tags, Under: h.Under}
	if err := scope(&f); err != nil {
		return QueryPage{}, err
	}
	page := QueryPage{Items: []map[string]any{}}
	if q.Aggregate {
		g := q.NewGrouper()
		err := s.scanQuery(ctx, q, f, "", func(_ string, doc map[string]any) (bool, error) {
			return true, g.Add(doc)
		})
		if errors.Is(err, query.ErrTooManyGroups) {
			return page, errcode.New(errcode.BadRequest, "%v", err)
		}
		if err != nil {
			return page, err
		}
		page.Items = g.Rows()
		if q.Top > 0 && len(page.Items) > q.Top {
			page.Items = page.Items[:q.Top]
		}
		return page, nil
	}
	want := b.PageSize
	if q.Top > 0 {
		want = min(want, q.Top-cur.Done)
	}
	if want <= 0 {
		return page, nil
	}
	last := ""
	err = s.scanQuery(ctx, q, f, cur.After, func(id string, doc map[string]any) (bool, error) {
		if len(page.Items) == want {
			// One more match exists beyond this page: it gets a token.
			cur.After, cur.Done = last, cur.Done+len(page.Items)
			tok, _ := json.Marshal(cur)
			page.Continuation = base64.RawURLEncoding.EncodeToString(tok)
			return false, nil
		}
		page.Items = append(page.Items, q.Project(doc))
		last = id
		return true, nil
	})
	if q.Top > 0 && cur.Done >= q.Top {
		page.Continuation = ""
	}
	return page, err
}

// scanQuery streams the twins that f admits after the ID `after`, a page of
// the store at a time, and hands each one q matches to fn, in ID order,
// until fn returns false, an error, or the twins run out.
func (s *Server) scanQuery(ctx context.Context, q *query.Query, f persistence.EntityFilter, after string,
	fn func(id string, doc map[string]any) (bool, error)) error {
	need := q.Needs()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, next, err := s.sys.ScanTwins(ctx, f, after, scanPage)
		if err != nil {
			return err
		}
		for _, row := range rows {
			doc, err := QueryDoc(row, need)
			if err != nil {
				return err
			}
			if !q.Match(doc) {
				continue
			}
			if more, err := fn(row.Entity.ID, doc); err != nil || !more {
				return err
			}
		}
		if next == "" {
			return nil
		}
		after = next
	}
}

// storedTwin is what a query reads of a stored twin document; the
// sections stay raw until a query needs them.
type storedTwin struct {
	Version    int64           `json:"version"`
	Tags       json.RawMessage `json:"tags"`
	Desired    json.RawMessage `json:"desired"`
	Reported   json.RawMessage `json:"reported"`
	Connection *struct {
		State string `json:"state"`
	} `json:"connection"`
}

// allSections is what QueryDoc decodes for SELECT *.
var allSections = map[string]bool{"tags": true, "properties.desired": true, "properties.reported": true}

// QueryDoc is the document a query sees of a twin: the IoT Hub shape,
// {"deviceId","kind","parent","etag","version","status","connectionState",
// "tags","properties":{"desired","reported"}}. status is the identity's
// ("enabled"/"disabled"), absent for entities without one;
// connectionState is "Connected" or "Disconnected", absent for entities
// that are neither devices nor ever connected. Of tags, desired and
// reported, only the sections in need are decoded (nil: all); the others
// are empty objects.
func QueryDoc(row persistence.TwinRow, need map[string]bool) (map[string]any, error) {
	if need == nil {
		need = allSections
	}
	var tw storedTwin
	if err := json.Unmarshal(row.Twin, &tw); err != nil {
		return nil, errcode.New(errcode.Internal, "twin %s: decode: %v", row.Entity.ID, err)
	}
	section := func(name string, raw json.RawMessage) (map[string]any, error) {
		m := map[string]any{}
		if need[name] && len(raw) > 0 {
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, errcode.New(errcode.Internal, "twin %s: decode %s: %v", row.Entity.ID, name, err)
			}
			if m == nil {
				m = map[string]any{}
			}
		}
		return m, nil
	}
	tags, err := section("tags", tw.Tags)
	if err != nil {
		return nil, err
	}
	desired, err := section("properties.desired", tw.Desired)
	if err != nil {
		return nil, err
	}
	reported, err := section("properties.reported", tw.Reported)
	if err != nil {
		return nil, err
	}
	doc := map[string]any{
		"deviceId":   row.Entity.ID,
		"kind":       row.Entity.Kind,
		"version":    float64(tw.Version),
		"etag":       strconv.FormatInt(tw.Version, 10),
		"tags":       tags,
		"properties": map[string]any{"desired": desired, "reported": reported},
	}
	if row.Entity.Parent != "" {
		doc["parent"] = row.Entity.Parent
	}
	if row.Identity != nil {
		doc["status"] = row.Identity.Status
	}
	switch {
	case tw.Connection != nil && tw.Connection.State == "connected":
		doc["connectionState"] = "Connected"
	case tw.Connection != nil || row.Identity != nil:
		doc["connectionState"] = "Disconnected"
	}
	return doc, nil
}
