package iothub

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// The rights of a shared access policy, named as IoT Hub names them.
const (
	RegistryRead   = "RegistryRead"
	RegistryWrite  = "RegistryWrite"
	ServiceConnect = "ServiceConnect"
	DeviceConnect  = "DeviceConnect"
)

// Policy is a hub-level shared access policy: a name, two keys and rights.
type Policy struct {
	Name         string   `json:"keyName"`
	PrimaryKey   string   `json:"primaryKey"`
	SecondaryKey string   `json:"secondaryKey"`
	Rights       []string `json:"rights"`
}

// Has reports whether the policy grants right.
func (p Policy) Has(right string) bool { return slices.Contains(p.Rights, right) }

// PoliciesFile is the name of the policies file in a node's data folder.
const PoliciesFile = "policies.json"

// defaultPolicies are the policies an IoT hub starts with.
var defaultPolicies = []Policy{
	{Name: "iothubowner", Rights: []string{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect}},
	{Name: "service", Rights: []string{ServiceConnect}},
	{Name: "registryRead", Rights: []string{RegistryRead}},
	{Name: "registryReadWrite", Rights: []string{RegistryRead, RegistryWrite}},
}

// LoadPolicies reads <dir>/policies.json, creating it (mode 0600) with the
// default policies and fresh 256-bit keys when it does not exist.
func LoadPolicies(dir string) ([]Policy, error) {
	path := filepath.Join(dir, PoliciesFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return createPolicies(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var ps []Policy
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range ps {
		if p.Name == "" || p.PrimaryKey == "" {
			return nil, fmt.Errorf("%s: a policy needs a keyName and a primaryKey", path)
		}
	}
	return ps, nil
}

func createPolicies(path string) ([]Policy, error) {
	ps := slices.Clone(defaultPolicies)
	for i := range ps {
		ps[i].PrimaryKey, ps[i].SecondaryKey = newKey(), newKey()
	}
	b, _ := json.MarshalIndent(ps, "", "  ")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another process wrote it first
		return LoadPolicies(filepath.Dir(path))
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return ps, nil
}

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// ConnectionString returns the service connection string of policy p for a
// hub reached at host.
func ConnectionString(host string, p Policy) string {
	return "HostName=" + host + ";SharedAccessKeyName=" + p.Name + ";SharedAccessKey=" + p.PrimaryKey
}
