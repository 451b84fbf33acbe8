package iothub

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestLoadPolicies: the first load generates the four default policies
// with distinct 256-bit keys into a 0600 file; later loads read them back.
func TestLoadPolicies(t *testing.T) {
	dir := t.TempDir()
	ps, err := LoadPolicies(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	keys := map[string]bool{}
	for _, p := range ps {
		names = append(names, p.Name)
		for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
			if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 || keys[k] {
				t.Fatalf("policy %s key %q", p.Name, k)
			}
			keys[k] = true
		}
	}
	if want := []string{"iothubowner", "service", "registryRead", "registryReadWrite"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("policies %v, want %v", names, want)
	}
	if !ps[0].Has(RegistryWrite) || ps[1].Has(RegistryRead) || !ps[2].Has(RegistryRead) || ps[2].Has(RegistryWrite) {
		t.Fatalf("rights %+v", ps)
	}
	st, err := os.Stat(filepath.Join(dir, PoliciesFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("policies file: %v %v", st, err)
	}
	again, err := LoadPolicies(dir)
	if err != nil || !reflect.DeepEqual(again, ps) {
		t.Fatalf("reload: %v", err)
	}
	cs := ConnectionString("hub.local:8443", ps[2])
	if cs != "HostName=hub.local:8443;SharedAccessKeyName=registryRead;SharedAccessKey="+ps[2].PrimaryKey {
		t.Fatalf("connection string %q", cs)
	}
	if err := os.WriteFile(filepath.Join(dir, PoliciesFile), []byte(`[{"keyName":""}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicies(dir); err == nil || !strings.Contains(err.Error(), "keyName") {
		t.Fatalf("a bad file loads: %v", err)
	}
}
