package actors

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/twinmesh/twinmesh/persistence"
)

// EventJob is the type of the events of fleet jobs (CONTRACT section 9):
// published by the member that runs a job as its progress changes, with
// Entity JobEntityPrefix+<job ID> and the job's document as Data.
const EventJob = "job"

// JobEntityPrefix starts the Entity of a job event; a WebSocket
// subscription to "$jobs" receives the events of every job.
const JobEntityPrefix = "$jobs/"

// JobDoc returns a document of the jobs bucket, or persistence.ErrNotFound.
func (s *System) JobDoc(key string) ([]byte, error) {
	return s.store.GetDoc(persistence.BucketJobs, key)
}

// JobDocs pages the documents of the jobs bucket whose key starts with
// prefix and sorts after after, in key order (persistence.DB.DocPage).
// A store without DocPage (a test double) gets ErrUnavailable.
func (s *System) JobDocs(prefix, after string, limit int) ([]persistence.Doc, error) {
	p, ok := s.store.(docPager)
	if !ok {
		return nil, fmt.Errorf("%w: the store cannot page documents", ErrUnavailable)
	}
	return p.DocPage(persistence.BucketJobs, prefix, after, limit)
}

// docPager is the part of persistence.DB that pages a doc bucket; it is
// not in Store so that Store's other implementations need not grow.
type docPager interface {
	DocPage(b persistence.Bucket, prefix, after string, limit int) ([]persistence.Doc, error)
}

// CommitJobDocs writes documents of the jobs bucket (a nil document
// deletes its key), atomically, on every member when clustered (they are catalog data, so that another member can
// take a job over).
func (s *System) CommitJobDocs(ctx context.Context, docs map[string][]byte) error {
	ops := make([]persistence.Op, 0, len(docs))
	for k, v := range docs {
		if v == nil {
			ops = append(ops, persistence.DeleteDoc(persistence.BucketJobs, k))
			continue
		}
		ops = append(ops, persistence.PutDoc(persistence.BucketJobs, k, v))
	}
	if err := s.commitCatalog(ctx, ops...); err != nil {
		return fmt.Errorf("store job documents: %w", err)
	}
	return nil
}

// PublishJob publishes a job's progress to every member's sinks.
func (s *System) PublishJob(id string, doc json.RawMessage) {
	s.publish(Event{Type: EventJob, Entity: JobEntityPrefix + id, Data: doc, TS: s.cfg.Now().UTC()})
}
