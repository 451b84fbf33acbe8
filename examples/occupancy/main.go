// Command occupancy is a twinmesh node with the occupancy plugin linked
// in (package ./occupancy): sensors tell their room whether they see
// anyone, and the room sets its HVAC to "comfort" or "eco".
//
//	go run ./examples/occupancy serve --data ./data-occupancy
//	TOKEN=$(cat data-occupancy/admin.token)
//	curl -X PUT -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/entities/r1 \
//	     -d '{"kind":"occupancy-room","tags":{"hvac":"ac1"}}'
//	curl -X PUT -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/devices/ac1 -d '{"kind":"hvac","parent":"r1"}'
//	curl -X PUT -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/devices/s1 -d '{"kind":"occupancy-sensor","parent":"r1"}'
//
// then let s1 publish {"occupied":true} over MQTT and read ac1's twin.
package main

import (
	"os"

	"github.com/twinmesh/twinmesh/api/node"
	_ "github.com/twinmesh/twinmesh/examples/occupancy/occupancy"
)

func main() { os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr)) }
