package persistence

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// writeRaw creates a bbolt file at path and runs fn in one Update on it.
func writeRaw(t *testing.T, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func setSchema(v string) func(tx *bbolt.Tx) error {
	return func(tx *bbolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bktMeta)
		if err != nil {
			return err
		}
		return m.Put(keySchema, []byte(v))
	}
}

func TestSchema(t *testing.T) {
	t.Run("new file: version, buckets, mode", func(t *testing.T) {
		db := openTemp(t, nil)
		err := db.Bolt().View(func(tx *bbolt.Tx) error {
			if v := tx.Bucket(bktMeta).Get(keySchema); string(v) != strconv.Itoa(SchemaVersion) {
				t.Errorf("schema = %q, want %d", v, SchemaVersion)
			}
			for _, b := range allBuckets() {
				if tx.Bucket(b) == nil {
					t.Errorf("bucket %s missing", b)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(db.Path())
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode = %v, %v; want 0600", fi.Mode().Perm(), err)
		}
	})
	cases := []struct {
		name    string
		prepare func(tx *bbolt.Tx) error
		wantErr error
	}{
		{"v0 empty file migrates", func(*bbolt.Tx) error { return nil }, nil},
		{"v0 with some data migrates and keeps it", func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket(bktTwins)
			if err != nil {
				return err
			}
			return b.Put([]byte("old"), []byte(`{"v":0}`))
		}, nil},
		{"current version opens", setSchema(strconv.Itoa(SchemaVersion)), nil},
		{"newer version is refused", setSchema(strconv.Itoa(SchemaVersion + 1)), ErrSchemaTooNew},
		{"garbage version is refused", setSchema("x"), errors.New("bad schema")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "twinmesh.db")
			writeRaw(t, path, c.prepare)
			db, err := Open(path, &Options{NoSync: true})
			if c.wantErr != nil {
				if err == nil {
					db.Close()
					t.Fatal("Open succeeded")
				}
				if errors.Is(c.wantErr, ErrSchemaTooNew) && !errors.Is(err, ErrSchemaTooNew) {
					t.Fatalf("err = %v, want ErrSchemaTooNew", err)
				}
				// The file is untouched.
				b, _ := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
				defer b.Close()
				_ = b.View(func(tx *bbolt.Tx) error {
					if tx.Bucket(bktTwins) != nil {
						t.Error("a refused file was migrated")
					}
					return nil
				})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Bolt().View(func(tx *bbolt.Tx) error {
				v, err := readSchema(tx)
				if v != SchemaVersion {
					t.Errorf("schema after open = %d", v)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if c.name == "v0 with some data migrates and keeps it" {
				if doc, err := db.GetTwin("old"); err != nil || string(doc) != `{"v":0}` {
					t.Fatalf("old data: %s, %v", doc, err)
				}
			}
			commit(t, db, PutDoc(BucketAlerts, "a", []byte(`1`)))
		})
	}
}

// TestMigrate checks the mechanism itself with a longer list of migrations.
func TestMigrate(t *testing.T) {
	var ran []int
	step := func(to int) migration {
		return migration{to: to, name: "step", apply: func(*bbolt.Tx) error { ran = append(ran, to); return nil }}
	}
	ms := []migration{step(1), step(2), step(3)}
	cases := []struct {
		stored   string // "" = no meta bucket
		wantRan  []int
		wantFrom int
		wantErr  error
	}{
		{"", []int{1, 2, 3}, 0, nil},
		{"1", []int{2, 3}, 1, nil},
		{"3", nil, 3, nil},
		{"4", nil, 4, ErrSchemaTooNew},
	}
	for _, c := range cases {
		t.Run("from "+c.stored, func(t *testing.T) {
			ran = nil
			path := filepath.Join(t.TempDir(), "m.db")
			writeRaw(t, path, func(tx *bbolt.Tx) error {
				if c.stored == "" {
					return nil
				}
				return setSchema(c.stored)(tx)
			})
			b, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var from, to int
			err = b.Update(func(tx *bbolt.Tx) (err error) {
				from, to, err = migrate(tx, ms)
				return err
			})
			if !errors.Is(err, c.wantErr) || from != c.wantFrom || !slices.Equal(ran, c.wantRan) {
				t.Fatalf("migrate = from %d to %d, ran %v, err %v; want from %d, ran %v, err %v", from, to, ran, err, c.wantFrom, c.wantRan, c.wantErr)
			}
			if err == nil {
				_ = b.View(func(tx *bbolt.Tx) error {
					if v, _ := readSchema(tx); v != 3 {
						t.Errorf("stored version %d, want 3", v)
					}
					return nil
				})
			}
		})
	}
	t.Run("misnumbered list is refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "m.db")
		b, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		err = b.Update(func(tx *bbolt.Tx) error { _, _, err := migrate(tx, []migration{step(1), step(3)}); return err })
		if err == nil {
			t.Fatal("accepted a gap in the migrations")
		}
	})
}

func TestOpenReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "twinmesh.db")
	db, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, db, PutIdentity(Identity{DeviceID: "d1", PrimaryKey: "k"}))
	t.Run("locked by the writer", func(t *testing.T) {
		o := DefaultOptions()
		o.LockTimeout = 50 * time.Millisecond
		if _, err := openReadOnly(path, o); !errors.Is(err, ErrLocked) {
			t.Fatalf("err = %v, want ErrLocked", err)
		}
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	if i, err := ro.GetIdentity("d1"); err != nil || i.PrimaryKey != "k" {
		t.Fatalf("GetIdentity = %+v, %v", i, err)
	}
	if err := ro.Commit(t.Context(), PutTwin("x", nil)); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Commit on read-only = %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("old schema", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "old.db")
		writeRaw(t, p, func(*bbolt.Tx) error { return nil })
		if _, err := OpenReadOnly(p); !errors.Is(err, ErrSchemaTooOld) {
			t.Fatalf("err = %v, want ErrSchemaTooOld", err)
		}
	})
	t.Run("new schema", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "new.db")
		writeRaw(t, p, setSchema("99"))
		if _, err := OpenReadOnly(p); !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("err = %v, want ErrSchemaTooNew", err)
		}
	})
}

func TestOptions(t *testing.T) {
	d := DefaultOptions()
	if d.MaxBatch != 1000 || d.MaxWait.Milliseconds() != 2 || d.QueueSize != 4000 || d.Logger == nil {
		t.Fatalf("defaults = %+v", d)
	}
	for _, bad := range []Options{{MaxBatch: -1}, {QueueSize: -1}, {LockTimeout: -1}} {
		if _, err := Open(filepath.Join(t.TempDir(), "x.db"), &bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%+v) err = %v", bad, err)
		}
	}
}

// v1Buckets are the buckets a schema-1 file has (schema 2 added epochs).
var v1Buckets = [][]byte{bktMeta, bktTwins, bktEntities, bktChildren, bktVia, bktIdentities, bktTelemetry, bktInbox,
	[]byte(BucketRules), []byte(BucketAlerts), []byte(BucketContrib), []byte(BucketGrants)}

// TestSchemaV1Migrates: a file written by the schema-1 binary gets the
// epochs (schema 2) and tombstones (schema 3) buckets, keeps its data, and
// fencing works on it.
func TestSchemaV1Migrates(t *testing.T) {
	cases := []struct {
		name  string
		extra func(tx *bbolt.Tx) error
	}{
		{"v1 file", func(*bbolt.Tx) error { return nil }},
		{"v1 file that already has an epochs bucket", func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket(bktEpochs)
			if err != nil {
				return err
			}
			return b.Put([]byte("d1"), []byte(`{"fence":4,"wrote":4}`))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "twinmesh.db")
			writeRaw(t, path, func(tx *bbolt.Tx) error {
				for _, name := range v1Buckets {
					if _, err := tx.CreateBucket(name); err != nil {
						return err
					}
				}
				if err := tx.Bucket(bktTwins).Put([]byte("d1"), []byte(`{"version":3}`)); err != nil {
					return err
				}
				if err := tx.Bucket(bktEntities).Put([]byte("d1"), []byte(`{"id":"d1","kind":"device"}`)); err != nil {
					return err
				}
				if err := setSchema("1")(tx); err != nil {
					return err
				}
				return c.extra(tx)
			})
			if _, err := OpenReadOnly(path); !errors.Is(err, ErrSchemaTooOld) {
				t.Fatalf("OpenReadOnly before migration = %v, want ErrSchemaTooOld", err)
			}
			db, err := Open(path, &Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Bolt().View(func(tx *bbolt.Tx) error {
				if v, _ := readSchema(tx); v != SchemaVersion {
					t.Errorf("schema after open = %d, want %d", v, SchemaVersion)
				}
				if tx.Bucket(bktEpochs) == nil {
					t.Error("no epochs bucket")
				}
				if tx.Bucket([]byte(BucketTombstones)) == nil {
					t.Error("no tombstones bucket")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if doc, err := db.GetTwin("d1"); err != nil || string(doc) != `{"version":3}` {
				t.Fatalf("twin after migration: %s, %v", doc, err)
			}
			if e, err := db.GetEntity("d1"); err != nil || e.Kind != "device" {
				t.Fatalf("entity after migration: %+v, %v", e, err)
			}
			before, _ := db.GetEpoch("d1")
			commit(t, db, ClaimEpoch("d1", before.Fence+1))
			if err := db.Commit(t.Context(), CheckEpoch("d1", before.Fence)); !errors.Is(err, ErrFenced) {
				t.Fatalf("stale write after migration = %v, want ErrFenced", err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			ro, err := OpenReadOnly(path)
			if err != nil {
				t.Fatalf("OpenReadOnly after migration: %v", err)
			}
			defer ro.Close()
			if e, err := ro.GetEpoch("d1"); err != nil || e.Fence != before.Fence+1 {
				t.Fatalf("epoch after reopen = %+v, %v", e, err)
			}
		})
	}
}
