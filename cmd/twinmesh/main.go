// Command twinmesh is the one binary of twinmesh: the node and its command
// line, all in package node (api/node).
package main

import (
	"os"

	"github.com/twinmesh/twinmesh/api/node"
)

func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
