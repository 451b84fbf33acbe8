package persistence

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Compact rewrites the stopped store at path into a new file holding only
// the pages in use, and puts it in place of the old one; it returns both
// sizes. bbolt reuses the pages that retention frees, so a store does not
// grow forever, but it never gives them back to the file system: after a
// large prune (a shorter retention, many devices deleted) Compact does.
// The store must not be open elsewhere (ErrLocked after the lock timeout);
// it is checked for the current schema first. A compaction that fails or is
// interrupted leaves the old file as it was (and a "<path>.compact" file,
// which the next Compact replaces).
func Compact(path string) (before, after int64, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	before = st.Size()
	o := DefaultOptions()
	src, err := openBolt(path, &o, false)
	if err != nil {
		return before, 0, err
	}
	defer func() {
		if src != nil {
			_ = src.Close()
		}
	}()
	if err := src.View(checkReadable); err != nil {
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return before, 0, err
	}
	dst, err := bbolt.Open(tmp, 0o600, &bbolt.Options{NoSync: true, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	// 64 MiB per transaction bounds the memory the copy takes.
	if err := bbolt.Compact(dst, src, 64<<20); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := dst.Sync(); err != nil && !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return before, 0, fmt.Errorf("compact %s: sync: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		_ = os.Remove(tmp)
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	// Still holding the old file's lock while the new one takes its name.
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the rename itself durable
		_ = d.Close()
	}
	if err := src.Close(); err != nil {
		return before, 0, err
	}
	src = nil
	if st, err = os.Stat(path); err != nil {
		return before, 0, err
	}
	return before, st.Size(), nil
}
