package loadgen

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// A minimal MQTT 3.1.1 client for holding many idle sessions: a connection
// is a socket and a few fields, with no goroutine of its own while idle
// (paho keeps several goroutines and buffers per client, which would make
// the load generator, not the node, the limit of a connect-only run).

// MQTT 3.1.1 control packet types (high nibble of the first byte).
const (
	pktConnect  = 1
	pktConnack  = 2
	pktPublish  = 3
	pktPuback   = 4
	pktPingreq  = 12
	pktPingresp = 13
)

// maxServerPacket bounds a packet read from the server: a connect-only
// session expects CONNACK, PUBACK and PINGRESP, all tiny, and perhaps a
// desired-properties or cloud-to-device publish.
const maxServerPacket = 1 << 20

// Errors of the minimal client; the reason of a failed connection is one
// of them (or a network error), see Reason.
var (
	// ErrRefused is a CONNACK with a non-zero return code.
	ErrRefused = errors.New("connection refused by the broker")
	// ErrMalformed is a packet from the server that is not valid MQTT.
	ErrMalformed = errors.New("malformed packet from the server")
)

// Conn is one idle MQTT session opened by DialMQTT. It is not safe for
// concurrent use.
type Conn struct {
	c   net.Conn
	r   *bufio.Reader
	pid uint16
}

// Session names the device a Conn is opened for.
type Session struct {
	ClientID, Username, Password string
}

// DialMQTT opens a TCP connection to addr (from source, when not nil),
// sends CONNECT (clean session, keep-alive holdKeepalive) and waits for a
// CONNACK that accepts it, all before ctx's deadline.
func DialMQTT(ctx context.Context, addr string, source net.IP, s Session) (*Conn, error) {
	d := net.Dialer{}
	if source != nil {
		d.LocalAddr = &net.TCPAddr{IP: source}
		d.Control = noPortAtBind
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// A small read buffer: the session reads a few tiny packets.
	conn := &Conn{c: c, r: bufio.NewReaderSize(c, 64)}
	if _, err := c.Write(encodeConnect(s)); err != nil {
		c.Close()
		return nil, err
	}
	typ, body, err := readPacket(conn.r, maxServerPacket)
	if err == nil && (typ != pktConnack || len(body) != 2) {
		err = fmt.Errorf("%w: packet type %d before CONNACK", ErrMalformed, typ)
	}
	if err == nil && body[1] != 0 {
		err = fmt.Errorf("%w: CONNACK return code %d", ErrRefused, body[1])
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return conn, nil
}

// PublishQoS1 publishes payload at QoS 1 and waits for its PUBACK until
// timeout; packets of other types that arrive meanwhile are skipped.
func (c *Conn) PublishQoS1(topic string, payload []byte, timeout time.Duration) error {
	c.pid++
	if c.pid == 0 {
		c.pid = 1
	}
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	defer c.c.SetDeadline(time.Time{})
	if _, err := c.c.Write(encodePublish(topic, payload, c.pid)); err != nil {
		return err
	}
	return c.await(pktPuback, func(body []byte) bool {
		return len(body) >= 2 && binary.BigEndian.Uint16(body) == c.pid
	})
}

// Ping sends PINGREQ and waits for PINGRESP until timeout: whether the
// session is still open.
func (c *Conn) Ping(timeout time.Duration) error {
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	defer c.c.SetDeadline(time.Time{})
	if _, err := c.c.Write([]byte{pktPingreq << 4, 0}); err != nil {
		return err
	}
	return c.await(pktPingresp, func([]byte) bool { return true })
}

// await reads packets until one of type typ for which match holds.
func (c *Conn) await(typ byte, match func([]byte) bool) error {
	for {
		t, body, err := readPacket(c.r, maxServerPacket)
		if err != nil {
			return err
		}
		if t == typ && match(body) {
			return nil
		}
	}
}

// Close sends DISCONNECT (best effort) and closes the socket.
func (c *Conn) Close() error {
	_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.c.Write([]byte{14 << 4, 0})
	return c.c.Close()
}

// readPacket reads one MQTT control packet: its type and its body (the
// bytes after the fixed header). A body longer than limit is an error.
func readPacket(r io.ByteReader, limit int) (typ byte, body []byte, err error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	typ = b >> 4
	if typ == 0 {
		return 0, nil, fmt.Errorf("%w: reserved packet type 0", ErrMalformed)
	}
	n, shift := 0, 0
	for i := 0; ; i++ {
		if i == 4 {
			return 0, nil, fmt.Errorf("%w: remaining length over 4 bytes", ErrMalformed)
		}
		x, err := r.ReadByte()
		if err != nil {
			return 0, nil, unexpected(err)
		}
		n |= int(x&0x7f) << shift
		shift += 7
		if x&0x80 == 0 {
			break
		}
	}
	if n > limit {
		return 0, nil, fmt.Errorf("%w: packet of %d bytes, the limit is %d", ErrMalformed, n, limit)
	}
	body = make([]byte, n)
	for i := range body {
		if body[i], err = r.ReadByte(); err != nil {
			return 0, nil, unexpected(err)
		}
	}
	return typ, body, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func appendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

func appendLength(b []byte, n int) []byte {
	for {
		x := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			x |= 0x80
		}
		b = append(b, x)
		if n == 0 {
			return b
		}
	}
}

// holdKeepalive is the keep-alive of a held session, in seconds: the
// longest MQTT allows (18 h; the broker closes a silent session after 1.5
// times that), so an idle session needs no pings during a run. (With 0, no
// keep-alive, mochi logs a warning for every connection.)
const holdKeepalive = 65535

// encodeConnect builds an MQTT 3.1.1 CONNECT: clean session, keep-alive
// holdKeepalive, with user name and password when set.
func encodeConnect(s Session) []byte {
	var v []byte
	v = appendString(v, "MQTT")
	flags := byte(0x02) // clean session
	if s.Username != "" {
		flags |= 0x80
	}
	if s.Password != "" {
		flags |= 0x40
	}
	v = append(v, 4, flags, holdKeepalive>>8, holdKeepalive&0xff) // level 4 (3.1.1), flags, keep-alive
	v = appendString(v, s.ClientID)
	if s.Username != "" {
		v = appendString(v, s.Username)
	}
	if s.Password != "" {
		v = appendString(v, s.Password)
	}
	return append(appendLength([]byte{pktConnect << 4}, len(v)), v...)
}

// encodePublish builds a QoS 1 PUBLISH.
func encodePublish(topic string, payload []byte, pid uint16) []byte {
	v := appendString(nil, topic)
	v = binary.BigEndian.AppendUint16(v, pid)
	v = append(v, payload...)
	return append(appendLength([]byte{pktPublish<<4 | 1<<1}, len(v)), v...)
}

// Reason classifies why a connection failed, for the counts a
// connect-only run reports: "refused" (nothing listens, or the listen
// queue is full), "reset" (the node closed the socket, e.g. at its
// connection or open-file limit), "timeout", "connack" (a CONNACK
// refusing the session), "source" (no source port or address left on this
// host), "fd-limit" (this process's open-file limit), or "other".
func Reason(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrRefused):
		return "connack"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "source"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "fd-limit"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}
