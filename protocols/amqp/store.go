package amqp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound: no endpoint, route or ingress by that name.
var ErrNotFound = errors.New("not found")

var (
	bucketEndpoints = []byte("endpoints")
	bucketRoutes    = []byte("routes")
	bucketIngress   = []byte("ingress")
	// bucketOutbox is the outbox of the binaries before the grain outbox
	// (persistence schema 9): one nested bucket per endpoint, keyed by
	// sequence. Nothing writes it now; its workers drain what is left.
	bucketOutbox = []byte("outbox")
	bucketDead   = []byte("dead") // one nested bucket per endpoint
)

// record is one outbox or dead-letter entry.
type record struct {
	outMessage
	Route string `json:"r"`
	// Kind is the device's kind (grain outbox entries: the grain that
	// settles the entry is addressed by it).
	Kind  string `json:"k,omitempty"`
	Tries int    `json:"n,omitempty"`
	// Error is why a dead letter is dead (the broker's rejection).
	Error string    `json:"e,omitempty"`
	Dead  time.Time `json:"x,omitzero"`
}

// entry is a record with its outbox key.
type entry struct {
	key []byte
	rec record
	len int // encoded size, for the byte bound
}

// store is the bbolt file of endpoints, routes, ingresses, outboxes and
// dead letters.
type store struct{ db *bolt.DB }

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open amqp store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEndpoints, bucketRoutes, bucketIngress, bucketOutbox, bucketDead} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init amqp store: %w", err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// putDef stores a definition (endpoint, route, ingress) as JSON.
func (s *store) putDef(bucket []byte, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(name), b) })
}

// deleteDef removes a definition; ErrNotFound when absent. Deleting an
// endpoint also drops its outbox (and keeps its dead letters readable).
func (s *store) deleteDef(bucket []byte, name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		if string(bucket) == string(bucketEndpoints) {
			if err := tx.Bucket(bucketOutbox).DeleteBucket([]byte(name)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
		}
		return b.Delete([]byte(name))
	})
}

// namedDefs calls fn with every definition of a bucket and its name.
func (s *store) namedDefs(bucket []byte, fn func(name string, raw []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// forgetDefs removes definitions from a bucket (moved to the cluster's
// catalog), keeping the outboxes.
func (s *store) forgetDefs(bucket []byte, names []string) error {
	if len(names) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, n := range names {
			if err := tx.Bucket(bucket).Delete([]byte(n)); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropLegacyOutbox deletes an endpoint's legacy outbox, if any.
func (s *store) dropLegacyOutbox(endpoint string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketOutbox).DeleteBucket([]byte(endpoint))
		if errors.Is(err, bolterrors.ErrBucketNotFound) {
			return nil
		}
		return err
	})
}

// defs decodes every definition of a bucket through fn.
func (s *store) defs(bucket []byte, fn func(raw []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, v []byte) error { return fn(v) })
	})
}

func seqKey(n uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, n)
	return k
}

// peek returns up to n of the endpoint's oldest outbox entries, in order.
func (s *store) peek(endpoint string, n int) ([]entry, error) {
	var out []entry
	err := s.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketOutbox).Bucket([]byte(endpoint))
		if eb == nil {
			return nil
		}
		c := eb.Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("outbox %s entry %x: %w", endpoint, k, err)
			}
			out = append(out, entry{key: append([]byte(nil), k...), rec: r, len: len(v)})
		}
		return nil
	})
	return out, err
}

// stats counts an endpoint's outbox entries and bytes (at start).
func (s *store) stats(endpoint string) (count, bytes int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketOutbox).Bucket([]byte(endpoint))
		if eb == nil {
			return nil
		}
		return eb.ForEach(func(_, v []byte) error {
			count++
			bytes += len(v)
			return nil
		})
	})
	return count, bytes, err
}

// settle removes delivered entries, rewrites retried ones (their try count)
// and moves dead ones to the endpoint's dead letters, in one transaction.
func (s *store) settle(endpoint string, done [][]byte, retried, dead []entry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketOutbox).Bucket([]byte(endpoint))
		if eb == nil {
			return nil // the endpoint was deleted meanwhile
		}
		for _, k := range done {
			if err := eb.Delete(k); err != nil {
				return err
			}
		}
		for _, e := range retried {
			b, _ := json.Marshal(e.rec)
			if err := eb.Put(e.key, b); err != nil {
				return err
			}
		}
		if len(dead) == 0 {
			return nil
		}
		db, err := tx.Bucket(bucketDead).CreateBucketIfNotExists([]byte(endpoint))
		if err != nil {
			return err
		}
		for _, e := range dead {
			seq, _ := db.NextSequence()
			b, _ := json.Marshal(e.rec)
			if err := db.Put(seqKey(seq), b); err != nil {
				return err
			}
			if err := eb.Delete(e.key); err != nil {
				return err
			}
		}
		return nil
	})
}

// addDead appends dead letters to an endpoint's list.
func (s *store) addDead(endpoint string, recs []record) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		db, err := tx.Bucket(bucketDead).CreateBucketIfNotExists([]byte(endpoint))
		if err != nil {
			return err
		}
		for _, r := range recs {
			seq, err := db.NextSequence()
			if err != nil {
				return err
			}
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := db.Put(seqKey(seq), b); err != nil {
				return err
			}
		}
		return nil
	})
}

// deadLetters returns up to limit dead letters of an endpoint, oldest first.
func (s *store) deadLetters(endpoint string, limit int) ([]record, error) {
	out := []record{}
	err := s.db.View(func(tx *bolt.Tx) error {
		db := tx.Bucket(bucketDead).Bucket([]byte(endpoint))
		if db == nil {
			return nil
		}
		c := db.Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
