package node

import (
	"fmt"
	"io"

	"github.com/twinmesh/twinmesh/api/iothub"
)

// connectionStringCmd prints the IoT Hub service connection string of one
// of the hub's shared access policies (CONTRACT section 9).
func connectionStringCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("connection-string", "connection-string [--data DIR] [--policy NAME] --host HOST",
		"Prints HostName=…;SharedAccessKeyName=…;SharedAccessKey=… for a shared access policy of the node's\n"+
			"<data>/policies.json (generated on first use), for back ends written with an Azure IoT service SDK.", stderr)
	data := fs.String("data", "./data", "the node's data folder")
	policy := fs.String("policy", "iothubowner", "shared access policy: iothubowner, service, registryRead or registryReadWrite")
	host := fs.String("host", "", "host name at which back ends reach the node's --https listener")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *host == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: give --host HOST and no arguments", errUsage)
	}
	ps, err := iothub.LoadPolicies(*data)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.Name == *policy {
			fmt.Fprintln(stdout, iothub.ConnectionString(*host, p))
			return nil
		}
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return fmt.Errorf("%w: no policy %q in %s (have %v)", errUsage, *policy, iothub.PoliciesFile, names)
}
