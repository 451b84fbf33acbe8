package node

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// BuildTime may be set at build time with
// -ldflags "-X github.com/twinmesh/twinmesh/api/node.BuildTime=2026-01-02T15:04:05Z"
// (`make build` does); Go's build information records the commit's time,
// not the build's.
var BuildTime = ""

// versionInfo is what `twinmesh version` prints, read from the binary's
// build information (debug.ReadBuildInfo).
type versionInfo struct {
	Version    string // module version: v1.2.3 for `go install …@v1.2.3`, "(devel)" for a build from a work tree
	Commit     string // vcs.revision, when built from a git work tree
	CommitTime string // vcs.time
	Modified   bool   // vcs.modified: the work tree had uncommitted changes
	BuildTime  string
	Go         string
}

func readVersion(bi *debug.BuildInfo, ok bool) versionInfo {
	v := versionInfo{Version: Version, BuildTime: BuildTime, Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		return v
	}
	if Version == "dev" && bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v versionInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "twinmesh %s\n", v.Version)
	if v.Commit != "" {
		mod := ""
		if v.Modified {
			mod = " (with uncommitted changes)"
		}
		fmt.Fprintf(&b, "commit      %s%s\n", v.Commit, mod)
	} else {
		b.WriteString("commit      unknown (built without version control information)\n")
	}
	if v.CommitTime != "" {
		fmt.Fprintf(&b, "commit time %s\n", v.CommitTime)
	}
	if v.BuildTime != "" {
		fmt.Fprintf(&b, "build time  %s\n", v.BuildTime)
	}
	fmt.Fprintf(&b, "go          %s\n", v.Go)
	return b.String()
}

// versionCmd is `twinmesh version`.
func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version",
		"Prints the module version, the commit the binary was built from (and whether the work tree\n"+
			"had uncommitted changes), the commit's time, the build time when the build recorded it, and Go's version.", stderr)
	if err := parseCommand(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	bi, ok := debug.ReadBuildInfo()
	fmt.Fprint(stdout, readVersion(bi, ok))
	return nil
}

// newFlagSet returns the flag set of a subcommand whose -h prints
// "usage: twinmesh SYNOPSIS", what the command does, then its flags.
func newFlagSet(name, synopsis, about string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: twinmesh %s\n\n%s\n", synopsis, about)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(fs.Output(), "\nflags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseCommand parses a subcommand's arguments: -h is flag.ErrHelp (the
// caller returns nil after the usage was printed), a bad flag a usage
// error.
func parseCommand(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
