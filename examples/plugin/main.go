// Command plugin is twinmesh with an extra entity kind linked in: the whole
// twinmesh command line (serve, token, ...) plus the comfort-sensor kind of
// package ./filter, a telemetry filter.
//
//	go run ./examples/plugin serve --data ./data-plugin
//	curl -X PUT -H "Authorization: Bearer $(cat data-plugin/admin.token)" \
//	     localhost:8080/api/v1/devices/s1 -d '{"kind":"comfort-sensor"}'
package main

import (
	"os"

	"github.com/twinmesh/twinmesh/api/node"
	_ "github.com/twinmesh/twinmesh/examples/plugin/filter"
)

func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
