// Command stream-device is a device program that embeds device streams
// (CONTRACT section 11) in its own MQTT session: it serves an echo service
// on a loopback port and lets operators reach it by device ID, with the
// public package protocols/streams/streamclient — the way a device's Go
// program adds streams next to its telemetry, without running
// `twinmesh stream agent`.
//
// Try it against a node (see "A first session" in the README):
//
//	KEY=$(curl -s -X PUT -H "Authorization: Bearer $(cat data/admin.token)" \
//	  localhost:8080/api/v1/devices/echo-1 -d '{}' | sed 's/.*"primaryKey":"\([^"]*\)".*/\1/')
//	go run ./examples/stream-device --mqtt 127.0.0.1:1883 --device echo-1 --key "$KEY" &
//	twinmesh stream proxy --node http://127.0.0.1:8080 --token "$(cat data/admin.token)" \
//	  --device echo-1 --name echo --listen 127.0.0.1:7777 &
//	echo hello | nc -q1 127.0.0.1 7777     # → hello
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/protocols/sas"
	"github.com/twinmesh/twinmesh/protocols/streams/streamclient"
)

func main() {
	broker := flag.String("mqtt", "127.0.0.1:1883", "the node's MQTT address")
	device := flag.String("device", "", "device ID")
	key := flag.String("key", "", "the device's SAS key")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *broker, *device, *key); err != nil {
		fmt.Fprintln(os.Stderr, "stream-device:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, broker, device, key string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// The device's own service: echo, on a loopback port nobody outside
	// can reach.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	context.AfterFunc(ctx, func() { _ = l.Close() })

	// Streams named "echo" reach it; any other name is refused.
	agent := &streamclient.Agent{Targets: map[string]string{"echo": l.Addr().String()}, Logger: log}

	// The device's MQTT session, as it would have anyway, with one more
	// subscription.
	sasToken, err := sas.Sign("twinmesh.local/devices/"+device, key, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(device).
		SetUsername("twinmesh.local/" + device + "/?api-version=2021-04-12").SetPassword(sasToken).SetProtocolVersion(4)
	cl := paho.NewClient(opts)
	if t := cl.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	defer cl.Disconnect(250)
	onRequest := func(c paho.Client, m paho.Message) {
		req, err := streamclient.ParseRequest(m.Topic(), m.Payload())
		if err != nil {
			log.Warn("bad stream request", "err", err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			agent.Handle(ctx, req, func(status int) {
				c.Publish(streamclient.ResponseTopic(status, req.RID), 0, false, []byte{}).WaitTimeout(10 * time.Second)
			})
		}()
	}
	if t := cl.Subscribe(streamclient.RequestFilter, 0, onRequest); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	log.Info("ready: streams named echo reach the echo service", "device", device)
	<-ctx.Done()
	return nil
}
