package persistence

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A backup taken while the store is open opens as a store with the same
// data and passes Check.
func TestBackupAndCheck(t *testing.T) {
	db := openTemp(t, nil)
	commit(t, db, PutEntity(Entity{ID: "d1", Kind: "device"}), PutTwin("d1", []byte(`{"version":3}`)))
	var buf bytes.Buffer
	n, err := db.Backup(&buf)
	if err != nil || n == 0 || int64(buf.Len()) != n {
		t.Fatalf("Backup: %d bytes, %v", n, err)
	}
	if err := db.Check(); err != nil {
		t.Fatalf("Check of a sound store: %v", err)
	}
	path := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	restored, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if tw, err := restored.GetTwin("d1"); err != nil || string(tw) != `{"version":3}` {
		t.Fatalf("restored twin: %s %v", tw, err)
	}
}

// Issue 12, item 10: a damaged file made the process panic (bbolt
// rebuilding its freelist), and an empty one was silently a fresh store.
// Both are ErrCorrupt now, naming the file.
func TestOpenDamagedFile(t *testing.T) {
	good := openTemp(t, nil)
	commit(t, good, PutTwin("d1", []byte(`{"version":1}`)))
	var buf bytes.Buffer
	if _, err := good.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	whole := buf.Bytes()
	cases := map[string][]byte{
		"empty":       {},
		"truncated":   whole[:4096],
		"zeroed meta": append(make([]byte, 8192), whole[8192:]...),
		// A file whose pages are garbage behind sound meta pages makes
		// bbolt panic on a goroutine of its own while it rebuilds the
		// freelist, which no recover reaches: api/node probes such a file
		// in a child process (TestServeRefusesDamagedStore).
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "twinmesh.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path, &Options{NoSync: true})
			if err == nil {
				err = db.Check()
				db.Close()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open of a %s file: %v, want ErrCorrupt", name, err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(path)) {
				t.Fatalf("the error does not name the file: %v", err)
			}
		})
	}
}
