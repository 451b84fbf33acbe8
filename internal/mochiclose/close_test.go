package mochiclose

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func startBroker(t *testing.T) (*mochi.Server, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(listeners.NewNet("t", ln)); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	return s, ln
}

// TestCloseWithConnectedClients: real clients connected; Close disconnects
// them and returns.
func TestCloseWithConnectedClients(t *testing.T) {
	s, ln := startBroker(t)
	var clients []paho.Client
	for i := 0; i < 20; i++ {
		o := paho.NewClientOptions().AddBroker("tcp://" + ln.Addr().String()).SetClientID("c" + string(rune('a'+i))).SetAutoReconnect(false)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		clients = append(clients, c)
	}
	start := time.Now()
	if err := Close(s, []io.Closer{ln}, time.Second, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if c.IsConnectionOpen() {
			// paho notices the closed socket asynchronously.
			time.Sleep(100 * time.Millisecond)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v", took)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("the listener still accepts connections after Close")
	}
}

// TestCloseIsBounded: while something keeps writing the client map (as
// clients connecting and leaving do), mochi's own Close can wait forever
// on its recursive read lock; Close returns within its timeout whatever
// happens, with ErrTimeout when mochi's did not return.
func TestCloseIsBounded(t *testing.T) {
	s, ln := startBroker(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl := s.NewClient(nil, "t", "churn", false)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.Clients.Add(cl)
			s.Clients.Delete(cl.ID)
		}
	}()
	start := time.Now()
	err := Close(s, []io.Closer{ln}, 200*time.Millisecond, time.Second)
	close(stop)
	if err == nil {
		wg.Wait()
	}
	// After ErrTimeout mochi's Close holds the client map's read lock for
	// good, and the writer above waits on it until the process ends: that
	// is the deadlock Close bounds, so the test does not wait for it.
	if err != nil && !errors.Is(err, ErrTimeout) {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v with a timeout of 1 s", took)
	}
	t.Logf("Close under churn: %v after %v", err, time.Since(start).Round(time.Millisecond))
}
