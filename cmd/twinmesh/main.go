// Command twinmesh is the one binary of twinmesh. See package cli.
package main

import (
	"os"

	"github.com/twinmesh/twinmesh/cmd/twinmesh/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
