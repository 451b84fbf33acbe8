package node

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
	"github.com/twinmesh/twinmesh/protocols/coap"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// tokenCmd prints a SAS token for a device, reading its key from the data
// folder. The node may be running: bbolt allows one writer, so the file is
// opened read-only with a short lock timeout.
func tokenCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", "token [--data DIR] [--ttl 1h] [--hub-host HOST] [--secondary] DEVICE_ID",
		"Prints a SAS token for the device DEVICE_ID, signed with its key from the node's data folder\n"+
			"(or asked of the node running on that folder): the MQTT password of the device.", stderr)
	data := fs.String("data", "./data", "data folder of the node")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	host := fs.String("hub-host", "twinmesh.local", "host name in the token's sr")
	secondary := fs.Bool("secondary", false, "sign with the secondary key")
	coapQuery := fs.Bool("coap-query", false, "print it as the query of a CoAP URI: sas=<token, percent-encoded>")
	// The device ID may come before, between or after the flags.
	var id string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		if id != "" {
			return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
		}
		id, args = fs.Arg(0), fs.Args()[1:]
	}
	if id == "" {
		return fmt.Errorf("%w: a DEVICE_ID is required", errUsage)
	}
	if *ttl <= 0 {
		return fmt.Errorf("%w: --ttl must be positive", errUsage)
	}
	if *coapQuery {
		stdout = &coapQueryWriter{w: stdout}
	}
	db, err := persistence.OpenReadOnly(filepath.Join(*data, "twinmesh.db"))
	if errors.Is(err, persistence.ErrLocked) {
		// A node runs on this folder and holds bbolt's lock: ask it.
		return tokenFromNode(*data, id, *ttl, *secondary, stdout)
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no store in %s: give --data the folder of the node (it holds twinmesh.db)", *data)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	idn, err := db.GetIdentity(id)
	if err != nil {
		return fmt.Errorf("device %s: %w", id, err)
	}
	key := idn.PrimaryKey
	if *secondary {
		key = idn.SecondaryKey
	}
	tok, err := sas.Sign(*host+"/devices/"+id, key, time.Now().Add(*ttl))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// nodeInfo is written to <data>/node.json while a node runs, so tools that
// find the bbolt file locked can reach the node instead.
type nodeInfo struct {
	HTTP string `json:"http"`
	PID  int    `json:"pid"`
}

func writeNodeInfo(data, httpAddr string) error {
	b, _ := json.Marshal(nodeInfo{HTTP: httpAddr, PID: os.Getpid()})
	return os.WriteFile(filepath.Join(data, "node.json"), b, 0o600)
}

// runningNode returns the base URL and admin token of the node running on
// data (it holds the store's lock), from its node.json and admin.token.
func runningNode(data string) (base, token string, err error) {
	raw, err := os.ReadFile(filepath.Join(data, "node.json"))
	if err != nil {
		return "", "", fmt.Errorf("the store is locked by a running node, and its node.json is unreadable: %w", err)
	}
	var ni nodeInfo
	if err := json.Unmarshal(raw, &ni); err != nil {
		return "", "", fmt.Errorf("node.json: %w", err)
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		return "", "", fmt.Errorf("admin token: %w", err)
	}
	return "http://" + ni.HTTP, strings.TrimSpace(string(tok)), nil
}

func tokenFromNode(data, id string, ttl time.Duration, secondary bool, stdout io.Writer) error {
	if secondary {
		return fmt.Errorf("a node is running on %s: --secondary needs the node stopped (the API signs with the primary key)", data)
	}
	base, tok, err := runningNode(data)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("%s/api/v1/devices/%s/token?ttl=%d", base, id, int(ttl.Seconds()))
	req, _ := http.NewRequest("POST", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("ask the running node: %w", err)
	}
	defer res.Body.Close()
	var out struct {
		Token string `json:"token"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return fmt.Errorf("node answered %s: %w", res.Status, err)
	}
	if out.Error != nil {
		return fmt.Errorf("device %s: %s", id, out.Error.Message)
	}
	fmt.Fprintln(stdout, out.Token)
	return nil
}

// coapQueryWriter prints a token line as the query of a CoAP URI.
type coapQueryWriter struct{ w io.Writer }

func (q *coapQueryWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(q.w, coap.SASQuery(strings.TrimSpace(string(p)))+"\n"); err != nil {
		return 0, err
	}
	return len(p), nil
}
