package streamclient

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// closeGrace is how long Join waits, after the TCP side ended, for the
// far end to answer the WebSocket close.
const closeGrace = 2 * time.Second

// chunk is the buffer per direction.
const chunk = 32 << 10

// Join relays between a TCP connection and a stream's WebSocket until
// either ends or ctx is done, and closes both. The end of the TCP side's
// input closes the stream (a WebSocket carries no half-close). It returns
// the bytes sent into the stream and received from it.
func Join(ctx context.Context, tcp net.Conn, ws *websocket.Conn) (sent, received int64) {
	var s, r atomic.Int64
	out := make(chan struct{}) // tcp → ws ended
	in := make(chan struct{})  // ws → tcp ended
	go func() {
		defer close(out)
		buf := make([]byte, chunk)
		for {
			n, err := tcp.Read(buf)
			if n > 0 {
				if ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					return
				}
				s.Add(int64(n))
			}
			if err != nil {
				_ = ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				return
			}
		}
	}()
	go func() {
		defer close(in)
		buf := make([]byte, chunk)
		for {
			_, rd, err := ws.NextReader()
			if err != nil {
				return
			}
			n, err := io.CopyBuffer(tcp, rd, buf)
			r.Add(n)
			if err != nil && !errors.Is(err, io.EOF) {
				return
			}
		}
	}()
	select {
	case <-in:
		// The far end closed: nothing more will arrive.
	case <-out:
		select {
		case <-in:
		case <-time.After(closeGrace):
		case <-ctx.Done():
		}
	case <-ctx.Done():
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	}
	_ = tcp.Close()
	_ = ws.Close()
	<-in
	<-out
	return s.Load(), r.Load()
}
