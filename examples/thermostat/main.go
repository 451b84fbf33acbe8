// Command thermostat is a twinmesh node with the reference plugin linked
// in: the whole twinmesh command line (serve, token, …) plus the
// thermostat kind (package ./thermostat; the README's "Writing a plugin" walks through it).
//
//	go run ./examples/thermostat serve --data ./data-thermostat
//	TOKEN=$(cat data-thermostat/admin.token)
//	curl -X PUT -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/devices/t1 -d '{"kind":"thermostat"}'
//	curl -X POST -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/entities/t1/ops/configure \
//	     -d '{"setpoint":21,"interval":"1s"}'
//
// Every member of a cluster must run a binary that links the same kinds.
package main

import (
	"os"

	"github.com/twinmesh/twinmesh/api/node"
	_ "github.com/twinmesh/twinmesh/examples/thermostat/thermostat"
)

func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
