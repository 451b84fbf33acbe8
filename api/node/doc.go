// Package node assembles and runs a twinmesh node: it is the whole twinmesh
// command line — `serve` (a node: persistence, the actor system, the
// cluster, the protocol adapters and the HTTP API, wired together), `token`
// (a device SAS token), `bench` (a load generator against a node) and
// `version` — with flag, environment and YAML configuration parsing.
//
// Its one entry point is [Main]. cmd/twinmesh is a few lines around it:
//
//	func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
//
// A binary that links extra entity kinds is the same lines plus a blank
// import of each plugin package, whose init registers its kinds before Main
// runs (see examples/plugin):
//
//	import (
//		"github.com/twinmesh/twinmesh/api/node"
//		_ "example.com/thermostat"
//	)
//
//	func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
//
// Every member of a cluster must link the same kinds.
//
// The package only constructs components and connects them; domain logic
// lives in the packages it wires (actors, cluster, persistence, protocols,
// api). Nothing in twinmesh imports it but binaries.
package node
