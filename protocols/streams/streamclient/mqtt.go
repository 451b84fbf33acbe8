package streamclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/protocols/sas"
)

// MQTTConfig is the device's MQTT session for RunMQTT.
type MQTTConfig struct {
	// Broker is the node's MQTT address: host:port (plain TCP), or a URL
	// tcp://host:port, ssl://host:port or tls://host:port.
	Broker string
	// DeviceID and Key (the device's SAS key, base64) authenticate it.
	DeviceID string
	Key      string
	// HubHost is the host in the SAS token's resource and the user name;
	// "" is the broker's host.
	HubHost string
	// TLS configures ssl:// and tls:// (nil: the system's roots).
	TLS *tls.Config
	// TokenTTL is the lifetime of the SAS tokens it signs; default 1 h.
	// A fresh token is signed at every (re)connection.
	TokenTTL time.Duration
	// Logger; nil is slog.Default().
	Logger *slog.Logger
}

// RunMQTT connects the device over MQTT (reconnecting as needed), answers
// the stream requests that arrive through a, and returns when ctx is done
// and every stream has ended; or at once with an error when the first
// connection is refused.
func RunMQTT(ctx context.Context, cfg MQTTConfig, a *Agent) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	broker := cfg.Broker
	if !strings.Contains(broker, "://") {
		broker = "tcp://" + broker
	}
	u, err := url.Parse(broker)
	if err != nil {
		return fmt.Errorf("mqtt broker %q: %w", cfg.Broker, err)
	}
	host := cfg.HubHost
	if host == "" {
		if host, _, err = net.SplitHostPort(u.Host); err != nil {
			host = u.Host
		}
	}
	ttl := cfg.TokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	// The streams' goroutines; none starts once RunMQTT is returning.
	var (
		mu     sync.Mutex
		ending bool
		wg     sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		ending = true
		mu.Unlock()
		wg.Wait()
	}()
	onRequest := func(c paho.Client, m paho.Message) {
		req, err := ParseRequest(m.Topic(), m.Payload())
		if err != nil {
			log.Warn("stream request ignored", "topic", m.Topic(), "err", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if ending {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Handle(ctx, req, func(status int) {
				c.Publish(ResponseTopic(status, req.RID), 0, false, []byte{}).WaitTimeout(10 * time.Second)
			})
		}()
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(cfg.DeviceID).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(true).
		SetMaxReconnectInterval(10 * time.Second).SetTLSConfig(cfg.TLS).
		SetCredentialsProvider(func() (string, string) {
			tok, err := sas.Sign(host+"/devices/"+cfg.DeviceID, cfg.Key, time.Now().Add(ttl))
			if err != nil {
				log.Error("sign SAS token", "err", err)
			}
			return host + "/" + cfg.DeviceID + "/?api-version=2021-04-12", tok
		}).
		SetOnConnectHandler(func(c paho.Client) {
			// Subscribed again at every connection: the session is clean.
			t := c.Subscribe(RequestFilter, 0, onRequest)
			if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
				log.Error("subscribe to stream requests", "err", t.Error())
				return
			}
			log.Info("waiting for stream requests", "device", cfg.DeviceID, "broker", cfg.Broker)
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) { log.Warn("mqtt connection lost", "err", err) })
	cl := paho.NewClient(opts)
	t := cl.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return nil
	}
	if t.Error() != nil {
		return fmt.Errorf("mqtt connect to %s as %s: %w", cfg.Broker, cfg.DeviceID, t.Error())
	}
	<-ctx.Done()
	cl.Disconnect(250)
	return nil
}
