package persistence

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

func TestEpochCodec(t *testing.T) {
	for _, e := range []Epoch{{}, {Fence: 1, Wrote: 1, Seq: 1}, {Fence: 1 << 63, Wrote: 7, Seq: 1<<64 - 1, Copy: 42}} {
		got, err := decodeEpoch(encodeEpoch(e))
		if err != nil || got != e {
			t.Errorf("round trip of %+v: %+v, %v", e, got, err)
		}
	}
	// Files written before the binary form hold JSON.
	got, err := decodeEpoch([]byte(`{"fence":5,"wrote":4,"seq":3,"copy":2}`))
	if err != nil || got != (Epoch{Fence: 5, Wrote: 4, Seq: 3, Copy: 2}) {
		t.Errorf("JSON epoch: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{{epochBinary}, {epochBinary, 1, 1, 1}, append(encodeEpoch(Epoch{Fence: 1}), 0), {epochBinary, 0xff}} {
		if _, err := decodeEpoch(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("decode %x: %v, want ErrInvalid", bad, err)
		}
	}
}

func FuzzDecodeEpoch(f *testing.F) {
	f.Add(encodeEpoch(Epoch{Fence: 3, Wrote: 2, Seq: 1}))
	f.Add([]byte(`{"fence":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := decodeEpoch(raw)
		if err != nil || len(raw) == 0 || raw[0] != epochBinary {
			return
		}
		if again, err := decodeEpoch(encodeEpoch(e)); err != nil || again != e {
			t.Fatalf("%x decoded to %+v, which does not round trip: %+v %v", raw, e, again, err)
		}
	})
}

// TestBinaryEpochsMigration: a schema-3 file holds JSON epochs; opening it
// rewrites them in the binary form, with the same values.
func TestBinaryEpochsMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	bdb, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bbolt.Tx) error {
		if err := ensureBuckets(tx); err != nil {
			return err
		}
		if err := setSchema("3")(tx); err != nil {
			return err
		}
		return tx.Bucket(bktEpochs).Put([]byte("g1"), []byte(`{"fence":9,"wrote":8,"seq":7}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := Epoch{Fence: 9, Wrote: 8, Seq: 7}
	if e, err := db.GetEpoch("g1"); err != nil || e != want {
		t.Fatalf("GetEpoch after the migration: %+v, %v", e, err)
	}
	_ = db.Bolt().View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bktEpochs).Get([]byte("g1")); !bytes.Equal(v, encodeEpoch(want)) {
			t.Errorf("stored after the migration: %q", v)
		}
		return nil
	})
}
