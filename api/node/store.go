package node

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

// probeCommand is the hidden command a child process runs to open and
// check a store: bbolt panics on some damaged files in a goroutine of its
// own (rebuilding the freelist), which no recover reaches, so the damage
// is found in a child whose crash only reports it.
const probeCommand = "__probe-store"

// probeStore opens the store at path in a child process — and with full,
// checks every page too — and returns nil for a sound file, or an error
// wrapping persistence.ErrCorrupt that says what was found. The store must
// not be open elsewhere.
func probeStore(ctx context.Context, path string, full bool) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	args := []string{probeCommand, path}
	if full {
		args = append(args, "full")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("check %s: %w", path, err)
	}
	msg := strings.TrimSpace(stderr.String())
	if i := strings.Index(msg, "\ngoroutine "); i > 0 {
		msg = strings.TrimSpace(msg[:i]) // a panic: its message, not its stacks
	}
	if ee.ExitCode() == probeLocked {
		return fmt.Errorf("check %s: %s", path, msg)
	}
	return fmt.Errorf("%s: %w: %s; restore a replica's copy or a backup (twinmesh backup), or move the file away to start an empty store",
		path, persistence.ErrCorrupt, msg)
}

// probeLocked is the probe's exit status when another process holds the
// store.
const probeLocked = 4

// probeMain is the child's side of probeStore.
func probeMain(args []string, stderr io.Writer) int {
	if len(args) < 1 || len(args) > 2 {
		fmt.Fprintln(stderr, "usage: twinmesh "+probeCommand+" FILE [full]")
		return 2
	}
	db, err := persistence.Open(args[0], &persistence.Options{NoSync: true, LockTimeout: time.Second})
	if err == nil {
		if len(args) == 2 {
			err = db.Check()
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, persistence.ErrLocked):
		fmt.Fprintln(stderr, err)
		return probeLocked
	default:
		fmt.Fprintln(stderr, err)
		return 1
	}
}

// checkCmd is `twinmesh check --data DIR`: it checks the store of a node
// that is not running (every page, in a child process).
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", "check [--data DIR]",
		"Reads every page of a stopped node's store and exits 1 naming what is wrong.", stderr)
	data := fs.String("data", "./data", "data folder of a stopped node")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	path := filepath.Join(*data, "twinmesh.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if err := probeStore(ctx, path, true); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return nil
}

// compactCmd is `twinmesh compact --data DIR`: the stopped node's store
// rewritten without its free pages (persistence.Compact).
func compactCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("compact", "compact [--data DIR]",
		"Rewrites a stopped node's store without the pages retention freed, and puts it in place of the old file.", stderr)
	data := fs.String("data", "./data", "data folder of a stopped node")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	path := filepath.Join(*data, "twinmesh.db")
	before, after, err := persistence.Compact(path)
	if errors.Is(err, persistence.ErrLocked) {
		return fmt.Errorf("%w: stop the node first (compaction needs the file to itself)", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d → %d bytes\n", path, before, after)
	return nil
}

// backupCmd is `twinmesh backup --data DIR --out FILE`: a consistent copy
// of the store, from the running node (GET /api/v1/backup) when one holds
// it, or from the file.
func backupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backup", "backup [--data DIR] --out FILE",
		"Writes a consistent copy of the node's store to FILE: from the running node, or from the file when it is stopped.", stderr)
	data := fs.String("data", "./data", "data folder of the node")
	out := fs.String("out", "", "file to write the copy to (required; not overwritten)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	f, err := os.OpenFile(*out+".partial", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	n, err := writeBackup(ctx, *data, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if _, serr := os.Stat(*out); serr == nil {
			err = fmt.Errorf("backup: %s exists", *out)
		} else {
			err = os.Rename(*out+".partial", *out)
		}
	}
	if err != nil {
		_ = os.Remove(*out + ".partial")
		return err
	}
	fmt.Fprintf(stdout, "%s: %d bytes\n", *out, n)
	return nil
}

func writeBackup(ctx context.Context, data string, w io.Writer) (int64, error) {
	db, err := persistence.OpenReadOnly(filepath.Join(data, "twinmesh.db"))
	if errors.Is(err, persistence.ErrLocked) {
		return backupFromNode(ctx, data, w)
	}
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return db.Backup(w)
}

// backupFromNode streams GET /api/v1/backup of the node running on data.
func backupFromNode(ctx context.Context, data string, w io.Writer) (int64, error) {
	base, token, err := runningNode(data)
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("ask the running node: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return 0, fmt.Errorf("the running node answered %s: %s", res.Status, msg)
	}
	n, err := io.Copy(w, res.Body)
	if err == nil && res.ContentLength >= 0 && n != res.ContentLength {
		err = fmt.Errorf("backup cut short: %d of %d bytes", n, res.ContentLength)
	}
	return n, err
}
