package streams_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/protocols/streams"
	"github.com/twinmesh/twinmesh/protocols/streams/streamclient"
)

// The tunnel against a direct loopback TCP connection, in the same run:
//
//	go test -run '^$' -bench BenchmarkTunnel -benchtime 3s ./protocols/streams/
//
// "direct" dials the target; "stream" dials a streamclient.Proxy that
// forwards through a Broker (WebSockets on loopback) to a
// streamclient.Agent, which dials the target: every hop of `twinmesh
// stream proxy` → node → `twinmesh stream agent` except MQTT, which only
// carries the request.

// through returns the address a client dials: the target itself, or a
// proxy whose streams reach it.
func through(b *testing.B, mode, target string) string {
	if mode == "direct" {
		return target
	}
	e := newEnv(b, streams.Config{}, target)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &streamclient.Proxy{Dialer: e.dialer, Device: "d1", Name: "t", Logger: slog.New(slog.DiscardHandler)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = p.Serve(ctx, l)
	}()
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return l.Addr().String()
}

func BenchmarkTunnel(b *testing.B) {
	for _, mode := range []string{"direct", "stream"} {
		b.Run("throughput/"+mode, func(b *testing.B) {
			var got atomic.Int64
			sink := tcpServer(b, func(c net.Conn) {
				n, _ := io.Copy(io.Discard, c)
				got.Add(n)
			})
			c, err := net.Dial("tcp", through(b, mode, sink))
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.Close()
			want := int64(b.N) * int64(len(buf))
			for deadline := time.Now().Add(time.Minute); got.Load() < want; {
				if time.Now().After(deadline) {
					b.Fatalf("the sink got %d of %d bytes", got.Load(), want)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	for _, mode := range []string{"direct", "stream"} {
		b.Run("roundtrip/"+mode, func(b *testing.B) {
			echo := tcpServer(b, func(c net.Conn) { _, _ = io.Copy(c, c) })
			c, err := net.Dial("tcp", through(b, mode, echo))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			one := make([]byte, 1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
