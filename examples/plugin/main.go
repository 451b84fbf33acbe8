// Command plugin is twinmesh with an extra entity kind linked in: the whole
// twinmesh command line (serve, token, ...) plus the thermostat kind.
//
//	go run ./examples/plugin serve --data ./data-plugin
//	curl -X PUT -H "Authorization: Bearer $(cat data-plugin/admin.token)" \
//	     localhost:8080/api/v1/devices/t1 -d '{"kind":"thermostat"}'
package main

import (
	"os"

	"github.com/twinmesh/twinmesh/api/node"
	_ "github.com/twinmesh/twinmesh/examples/plugin/thermostat"
)

func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
