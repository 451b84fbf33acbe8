package api

// Bulk import and export as NDJSON (CONTRACT section 9): one line per
// entity, {"entity":{…},"identity":{…}?,"twin":{"desired","tags"}?},
// streamed both ways.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/internal/strictjson"
	"github.com/twinmesh/twinmesh/persistence"
)

const (
	// importWorkers bounds the lines applied at once: enough to fill the
	// store's group commits, few enough that a line waits for its parent
	// only briefly.
	importWorkers = 32
	// maxImportErrors bounds the per-line errors an import answer lists
	// (the count of failed lines stays exact).
	maxImportErrors = 1000
	// maxDrySeen bounds the IDs a dry run remembers to accept a parent
	// that an earlier line of the file creates.
	maxDrySeen = 1 << 20
)

// BulkLine is one line of an import or export.
type BulkLine struct {
	Entity   BulkEntity           `json:"entity"`
	Identity *actors.IdentitySpec `json:"identity,omitempty"`
	Twin     *BulkTwin            `json:"twin,omitempty"`
}

// BulkEntity is the entity of a bulk line: its ID and spec.
type BulkEntity struct {
	ID           string         `json:"id"`
	Kind         string         `json:"kind"`
	Parent       string         `json:"parent,omitempty"`
	ConnectedVia string         `json:"connectedVia,omitempty"`
	Tags         map[string]any `json:"tags,omitempty"`
}

// BulkTwin is what a bulk line sets of the twin: each section given
// replaces the twin's.
type BulkTwin struct {
	Desired map[string]any `json:"desired,omitempty"`
	Tags    map[string]any `json:"tags,omitempty"`
}

// ImportError is the error of one line of an import.
type ImportError struct {
	Line  int       `json:"line"`
	ID    string    `json:"id,omitempty"`
	Error ErrorBody `json:"error"`
}

// ImportResult is the answer of POST /api/v1/import.
type ImportResult struct {
	DryRun  bool          `json:"dryRun"`
	Lines   int           `json:"lines"`
	Created int           `json:"created"`
	Updated int           `json:"updated"`
	Failed  int           `json:"failed"`
	Errors  []ImportError `json:"errors"`
	// ErrorsTruncated: more lines failed than Errors lists.
	ErrorsTruncated bool `json:"errorsTruncated,omitempty"`
}

// lineReader reads lines of at most max bytes; a longer line is skipped
// whole and reported, so that one bad line loses nothing else.
type lineReader struct {
	r   *bufio.Reader
	max int
}

// next returns the next line without its end, whether it was too long, and
// io.EOF after the last one.
func (lr *lineReader) next() (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > lr.max+1 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 && !tooLong {
				return nil, false, io.EOF
			}
			return bytes.TrimRight(buf, "\r\n"), tooLong, nil
		case err != nil:
			return nil, false, err
		}
		return bytes.TrimRight(buf, "\r\n"), tooLong, nil
	}
}

// parseBulkLine decodes and checks one line.
func parseBulkLine(raw []byte) (BulkLine, error) {
	var l BulkLine
	if err := strictjson.Check(raw); err != nil {
		return l, errcode.New(errcode.BadRequest, "%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return l, errcode.New(errcode.BadRequest, "malformed line: %v", err)
	}
	if !actors.ValidID(l.Entity.ID) {
		return l, errcode.New(errcode.BadRequest, "entity.id %q is not a valid entity ID", l.Entity.ID)
	}
	if l.Entity.Kind == "" {
		return l, errcode.New(errcode.BadRequest, "entity.kind is required")
	}
	if l.Identity != nil {
		if err := actors.CheckIdentity(*l.Identity); err != nil {
			return l, err
		}
	}
	return l, nil
}

// importBody answers POST /api/v1/import[?dryRun=true]: the body is read a
// line at a time, lines are applied by a bounded pool (a line waits for
// the lines in flight that create its parent or gateway), and the answer
// counts what happened with the error of each failed line.
func (s *Server) importBody(w http.ResponseWriter, r *http.Request) error {
	dry, _ := strconv.ParseBool(r.URL.Query().Get("dryRun"))
	res := ImportResult{DryRun: dry, Errors: []ImportError{}}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		inflight = map[string]chan struct{}{}
		sem      = make(chan struct{}, importWorkers)
		seen     = map[string]bool{} // dry run: IDs earlier lines create
	)
	fail := func(line int, id string, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if len(res.Errors) == maxImportErrors {
			res.ErrorsTruncated = true
			return
		}
		_, body := ErrorOf(err)
		res.Errors = append(res.Errors, ImportError{Line: line, ID: id, Error: body})
	}
	ctx := r.Context()
	lr := &lineReader{r: bufio.NewReaderSize(r.Body, 64<<10), max: int(s.cfg.MaxBody)}
	var readErr error
	for n := 1; ctx.Err() == nil; n++ {
		raw, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readErr = errcode.New(errcode.BadRequest, "read line %d: %v", n, err)
			break
		}
		if len(bytes.TrimSpace(raw)) == 0 && !tooLong {
			continue
		}
		res.Lines++
		if tooLong {
			fail(n, "", errcode.New(errcode.TooLarge, "line over %d bytes", lr.max))
			continue
		}
		line, err := parseBulkLine(raw)
		if err != nil {
			fail(n, line.Entity.ID, err)
			continue
		}
		if dry {
			err := s.checkBulkLine(ctx, line, seen)
			if err != nil {
				fail(n, line.Entity.ID, err)
				continue
			}
			if len(seen) < maxDrySeen {
				seen[line.Entity.ID] = true
			}
			if _, err := s.sys.GetEntity(ctx, line.Entity.ID); err == nil {
				res.Updated++
			} else {
				res.Created++
			}
			continue
		}
		// Wait for the lines in flight that this one depends on.
		for _, dep := range []string{line.Entity.ID, line.Entity.Parent, line.Entity.ConnectedVia} {
			mu.Lock()
			ch := inflight[dep]
			mu.Unlock()
			if ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		done := make(chan struct{})
		mu.Lock()
		inflight[line.Entity.ID] = done
		mu.Unlock()
		wg.Add(1)
		go func(n int, line BulkLine) {
			defer wg.Done()
			created, err := s.applyBulkLine(ctx, line)
			mu.Lock()
			switch {
			case err != nil:
			case created:
				res.Created++
			default:
				res.Updated++
			}
			if inflight[line.Entity.ID] == done {
				delete(inflight, line.Entity.ID)
			}
			mu.Unlock()
			if err != nil {
				fail(n, line.Entity.ID, err)
			}
			close(done)
			<-sem
		}(n, line)
	}
	wg.Wait()
	if readErr == nil {
		readErr = ctx.Err()
	}
	if readErr != nil && res.Lines == 0 {
		return readErr
	}
	if readErr != nil {
		fail(res.Lines+1, "", readErr)
	}
	slices.SortFunc(res.Errors, func(a, b ImportError) int { return a.Line - b.Line })
	writeJSON(w, 200, res)
	return nil
}

// checkBulkLine checks what a dry run can without changing anything: the
// kind, and that the parent and gateway exist or come earlier in the file.
func (s *Server) checkBulkLine(ctx context.Context, l BulkLine, seen map[string]bool) error {
	if !slices.Contains(s.sys.Kinds(), l.Entity.Kind) {
		return errcode.New(errcode.BadRequest, "unknown kind %q (registered: %v)", l.Entity.Kind, s.sys.Kinds())
	}
	if old, err := s.sys.GetEntity(ctx, l.Entity.ID); err == nil && old.Kind != l.Entity.Kind {
		return errcode.New(errcode.Conflict, "entity %s is a %s; delete it to change its kind", l.Entity.ID, old.Kind)
	}
	for _, ref := range []struct{ what, id string }{{"parent", l.Entity.Parent}, {"connectedVia", l.Entity.ConnectedVia}} {
		if ref.id == "" || seen[ref.id] {
			continue
		}
		if _, err := s.sys.GetEntity(ctx, ref.id); err != nil {
			return errcode.New(errcode.BadRequest, "%s %s does not exist and no earlier line creates it", ref.what, ref.id)
		}
	}
	if l.Identity != nil && !s.sys.IsDeviceKind(l.Entity.Kind) {
		return errcode.New(errcode.Conflict, "a %s cannot hold a device identity", l.Entity.Kind)
	}
	return nil
}

// applyBulkLine creates or replaces the entity (its tags are twin.tags when
// the line gives them, else entity.tags), then its identity, then the
// twin's desired properties. A line applied twice changes nothing the
// second time.
func (s *Server) applyBulkLine(ctx context.Context, l BulkLine) (bool, error) {
	tags := l.Entity.Tags
	if l.Twin != nil && l.Twin.Tags != nil {
		tags = l.Twin.Tags
	}
	_, created, err := s.sys.PutEntity(ctx, l.Entity.ID, actors.EntitySpec{Kind: l.Entity.Kind, Parent: l.Entity.Parent,
		ConnectedVia: l.Entity.ConnectedVia, Tags: tags})
	if err != nil {
		return false, err
	}
	if l.Identity != nil {
		if _, _, err := s.sys.PutIdentity(ctx, l.Entity.ID, *l.Identity); err != nil {
			return created, err
		}
	}
	if l.Twin != nil && l.Twin.Desired != nil {
		if _, _, err := s.sys.ReplaceTwin(ctx, l.Entity.ID, l.Twin.Desired, nil, nil); err != nil {
			return created, err
		}
	}
	return created, nil
}

// export answers GET /api/v1/export[?under=id]: every entity (or the
// subtree of under, under itself first) as NDJSON, parents before their
// children and, among siblings, gateways before the devices connected via
// them, so that the output imports as it is.
func (s *Server) export(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	under := r.URL.Query().Get("under")
	var roots []persistence.Entity
	if under != "" {
		e, err := s.sys.GetEntity(ctx, under)
		if err != nil {
			return err
		}
		roots = []persistence.Entity{e}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	ex := &exporter{s: s, w: bw}
	err := func() error {
		if under != "" {
			return ex.tree(ctx, roots[0])
		}
		// Roots are the entities without a parent, or whose parent is
		// gone; everything else is reached from them.
		after := ""
		for {
			page, next, err := s.sys.ListEntities(ctx, persistence.EntityFilter{}, after, 1000)
			if err != nil {
				return err
			}
			for _, e := range page {
				if e.Parent != "" {
					if _, err := s.sys.GetEntity(ctx, e.Parent); err == nil {
						continue
					}
				}
				if err := ex.tree(ctx, e); err != nil {
					return err
				}
			}
			if next == "" {
				return nil
			}
			after = next
		}
	}()
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		if ex.lines == 0 && !ex.flushed {
			return err
		}
		// The status is sent: cut the response, so the client sees a
		// short export rather than a complete-looking one.
		s.log.Error("export", "err", err, "lines", ex.lines)
		panic(http.ErrAbortHandler)
	}
	return nil
}

type exporter struct {
	s       *Server
	w       *bufio.Writer
	lines   int
	flushed bool
}

// tree writes root and its subtree, depth first; it holds one list of
// children per level, never the whole tree.
func (ex *exporter) tree(ctx context.Context, root persistence.Entity) error {
	stack := [][]persistence.Entity{{root}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if len(*top) == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		e := (*top)[0]
		*top = (*top)[1:]
		if err := ex.line(ctx, e); err != nil {
			return err
		}
		kids, err := ex.s.sys.Children(ctx, e.ID)
		if errors.Is(err, actors.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		// Gateways (connected via nothing) before what connects via them.
		slices.SortStableFunc(kids, func(a, b persistence.Entity) int {
			return boolInt(a.ConnectedVia != "") - boolInt(b.ConnectedVia != "")
		})
		if len(stack) > 1000 {
			return fmt.Errorf("export: the tree under %s is over 1000 levels deep", root.ID)
		}
		stack = append(stack, kids)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// line writes one entity's line.
func (ex *exporter) line(ctx context.Context, e persistence.Entity) error {
	l := BulkLine{Entity: BulkEntity{ID: e.ID, Kind: e.Kind, Parent: e.Parent, ConnectedVia: e.ConnectedVia, Tags: e.Tags}}
	idn, err := ex.s.sys.Identity(ctx, e.ID)
	switch {
	case err == nil:
		l.Identity = &actors.IdentitySpec{PrimaryKey: idn.PrimaryKey, SecondaryKey: idn.SecondaryKey, Status: idn.Status}
	case !errors.Is(err, actors.ErrNotFound):
		return err
	}
	doc, err := ex.s.sys.StoredTwin(ctx, e.ID)
	switch {
	case err == nil:
		var tw struct {
			Desired map[string]any `json:"desired"`
		}
		dec := json.NewDecoder(bytes.NewReader(doc))
		dec.UseNumber()
		if err := dec.Decode(&tw); err != nil {
			return fmt.Errorf("twin %s: decode: %w", e.ID, err)
		}
		delete(tw.Desired, "$version")
		if len(tw.Desired) > 0 {
			l.Twin = &BulkTwin{Desired: tw.Desired}
		}
	case !errors.Is(err, actors.ErrNotFound):
		return err
	}
	b, err := Marshal(l)
	if err != nil {
		return fmt.Errorf("encode %s: %w", e.ID, err)
	}
	if ex.w.Available() < len(b)+1 {
		ex.flushed = true
	}
	if _, err := ex.w.Write(append(b, '\n')); err != nil {
		return err
	}
	ex.lines++
	return nil
}
