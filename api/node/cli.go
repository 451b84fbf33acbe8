package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Version is set at build time with
// -ldflags "-X github.com/twinmesh/twinmesh/api/node.Version=...".
var Version = "dev"

// Main runs the command line with args (without the program name) and
// returns the process exit status: 0 on success, 2 on a usage error, 1 on
// any other failure.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr)
}

const usage = `usage: twinmesh <command> [flags]

commands:
  serve     run a node (embedded defaults: ./data, HTTP :8080, MQTT :1883)
  token     print a SAS token for a device: twinmesh token [--data DIR] [--ttl 1h] DEVICE_ID
  stream    device streams: 'stream proxy' forwards a local port to a device, 'stream agent' is the device side
  bench     load generator: simulated devices publish telemetry against a node, compared with a bare mochi broker
  backup    copy the store, from the running node or the file: twinmesh backup --data DIR --out FILE
  check     check every page of a stopped node's store: twinmesh check --data DIR
  compact   give the pages retention freed back to the file system (stopped node): twinmesh compact --data DIR
  connection-string  print an IoT Hub service connection string: twinmesh connection-string --data DIR --policy iothubowner --host HOST
  version   print the module version, commit and build time

Run 'twinmesh <command> -h' for the flags of a command.
`

// errUsage marks errors that are the caller's fault (exit status 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr)
	case "token":
		err = tokenCmd(args[1:], stdout, stderr)
	case "stream":
		err = streamCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "backup":
		err = backupCmd(ctx, args[1:], stdout, stderr)
	case "check":
		err = checkCmd(ctx, args[1:], stdout, stderr)
	case "compact":
		err = compactCmd(args[1:], stdout, stderr)
	case "connection-string":
		err = connectionStringCmd(args[1:], stdout, stderr)
	case probeCommand:
		return probeMain(args[1:], stderr)
	case benchWorkerCommand:
		return benchWorkerMain(ctx, os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		err = versionCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "twinmesh: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "twinmesh %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "twinmesh %s: %v\n", args[0], err)
		return 1
	}
}
