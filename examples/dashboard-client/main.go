// Command dashboard-client is the smallest useful client of twinmesh's
// WebSocket API: it subscribes to an entity's subtree and prints every
// event, one line each, until interrupted.
//
//	go run ./examples/dashboard-client --url ws://127.0.0.1:8080/api/v1/ws \
//	    --token "$(cat data/admin.token)" --entity building-1
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/api/v1/ws", "WebSocket URL of a node")
	token := flag.String("token", os.Getenv("TWINMESH_TOKEN"), "admin token (or TWINMESH_TOKEN)")
	entity := flag.String("entity", "", "entity whose subtree to watch")
	count := flag.Int("count", 0, "exit after this many events (0: run until interrupted)")
	flag.Parse()
	if *token == "" || *entity == "" {
		fmt.Fprintln(os.Stderr, "usage: dashboard-client --token TOKEN --entity ID [--url ws://…/api/v1/ws]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *token, *entity, *count); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard-client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, token, entity string, count int) error {
	c, res, err := websocket.DefaultDialer.DialContext(ctx, url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		if res != nil {
			return fmt.Errorf("connect: %v (HTTP %s)", err, res.Status)
		}
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	go func() { // close the socket when interrupted, which ends ReadMessage
		<-ctx.Done()
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.Close()
	}()
	sub := map[string]any{"id": 1, "op": "subscribe", "entity": entity, "subtree": true}
	if err := c.WriteJSON(sub); err != nil {
		return err
	}
	seen := 0
	for {
		var m struct {
			ID      *int            `json:"id"`
			OK      bool            `json:"ok"`
			Error   json.RawMessage `json:"error"`
			Type    string          `json:"type"`
			Entity  string          `json:"entity"`
			Version int64           `json:"version"`
			Data    json.RawMessage `json:"data"`
			TS      time.Time       `json:"ts"`
			Missed  int64           `json:"missed"`
		}
		if err := c.ReadJSON(&m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if m.ID != nil {
			if !m.OK {
				return fmt.Errorf("subscribe refused: %s", m.Error)
			}
			fmt.Printf("subscribed to %s and everything beneath it\n", entity)
			continue
		}
		missed := ""
		if m.Missed > 0 {
			missed = fmt.Sprintf(" (missed %d)", m.Missed)
		}
		fmt.Printf("%s %-10s %-16s v%-4d %s%s\n", m.TS.Format("15:04:05.000"), m.Type, m.Entity, m.Version, m.Data, missed)
		if seen++; count > 0 && seen >= count {
			return nil
		}
	}
}
