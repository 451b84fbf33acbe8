package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
	"github.com/pion/logging"
	"github.com/pion/transport/v5/udp"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
)

// pskListener accepts DTLS sessions with pre-shared keys: the client's PSK
// identity is a device ID, the key that device's primary or secondary key
// string. pion's own listener has one PSK callback for all sessions; ours
// builds each session with a callback that knows its remote address, which
// the key choice needs (keyChooser).
type pskListener struct {
	s      *Server
	parent net.Listener
	closed atomic.Bool
}

// listenDTLS binds addr; only datagrams that start a handshake open a
// session (pion's filter).
func (s *Server) listenDTLS(addr string) (*pskListener, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	lc := udp.ListenConfig{AcceptFilter: isHandshake, ReadBufferSize: readBuffer}
	parent, err := lc.Listen("udp", a)
	if err != nil {
		return nil, err
	}
	return &pskListener{s: s, parent: parent}, nil
}

// isHandshake reports whether a datagram carries a DTLS handshake record.
func isHandshake(packet []byte) bool {
	pkts, err := recordlayer.UnpackDatagram(packet)
	if err != nil || len(pkts) < 1 {
		return false
	}
	h := &recordlayer.Header{}
	if err := h.Unmarshal(pkts[0]); err != nil {
		return false
	}
	return h.ContentType == protocol.ContentTypeHandshake
}

// AcceptWithContext returns the next session, not yet handshaken (go-coap
// runs the handshake with a timeout).
func (l *pskListener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	for {
		if l.closed.Load() || ctx.Err() != nil {
			return nil, coapnet.ErrListenerIsClosed
		}
		c, err := l.parent.Accept()
		if err != nil {
			if l.closed.Load() {
				return nil, coapnet.ErrListenerIsClosed
			}
			return nil, err
		}
		pc := &pskConn{l: l, raw: c, ip: hostOf(c.RemoteAddr()), key: -1}
		dc, err := dtls.ServerWithOptions(dtlsnet.PacketConnFromConn(c), c.RemoteAddr(),
			dtls.WithPSK(pc.psk), dtls.WithCipherSuites(pskSuites...), dtls.WithLoggerFactory(handshakeLog{pc}),
			dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret))
		if err != nil {
			_ = c.Close()
			l.s.log.Warn("dtls session", "err", err)
			continue
		}
		pc.Conn = dc
		return pc, nil
	}
}

// pskSuites are the PSK cipher suites offered: CCM_8 is what RFC 7252
// mandates for CoAP, the others are what general-purpose clients (OpenSSL,
// GnuTLS builds of libcoap) also propose.
var pskSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_AES_128_CCM_8,
	dtls.TLS_PSK_WITH_AES_128_CCM,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
}

// Close stops accepting; sessions already open stay open.
func (l *pskListener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	return l.parent.Close()
}

// Addr returns the bound address.
func (l *pskListener) Addr() net.Addr { return l.parent.Addr() }

func hostOf(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.IP.String()
	}
	host, _, _ := net.SplitHostPort(a.String())
	return host
}

// pskConn is one DTLS session; it knows the device it authenticated.
type pskConn struct {
	*dtls.Conn
	l   *pskListener
	raw net.Conn // the datagrams under the session
	ip  string

	mu     sync.Mutex
	device string
	key    int // index of the key offered to the handshake, -1 before
	cancel context.CancelFunc
	done   bool // the handshake ended
}

// psk is the session's PSK callback: the identity must be an enabled
// device, whose key it returns.
func (c *pskConn) psk(identity []byte) ([]byte, error) {
	s := c.l.s
	device := string(identity)
	if !validSegment(device) {
		s.m.refused.WithLabelValues("bad_identity").Inc()
		return nil, errors.New("PSK identity is not a device ID")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	idn, err := s.backend.Identity(ctx, device)
	if err != nil {
		s.m.refused.WithLabelValues("unknown_device").Inc()
		return nil, fmt.Errorf("device %q: %w", device, err)
	}
	if !idn.Enabled {
		s.m.refused.WithLabelValues("disabled").Inc()
		return nil, fmt.Errorf("device %s is disabled", device)
	}
	keys := [2]string{idn.PrimaryKey, idn.SecondaryKey}
	i := s.keys.choose(device, c.ip)
	if keys[i] == "" {
		i = 1 - i
	}
	c.mu.Lock()
	c.device, c.key = device, i
	c.mu.Unlock()
	return []byte(keys[i]), nil
}

// HandshakeContext runs the handshake and tells the key chooser how the
// offered key fared.
func (c *pskConn) HandshakeContext(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	err := c.Conn.HandshakeContext(ctx)
	c.mu.Lock()
	device, key := c.device, c.key
	c.done = true
	c.mu.Unlock()
	if device != "" && key >= 0 {
		c.l.s.keys.result(device, c.ip, key, err == nil)
	}
	if err != nil {
		c.l.s.m.handshakeFailures.Inc()
	}
	return err
}

// wrongKey ends a handshake whose client used another key than the one
// offered: its Finished record does not decrypt. pion drops such records
// and waits for the handshake's timeout; ending it at once lets the
// client's next attempt, offered the other key, come sooner.
func (c *pskConn) wrongKey() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done && c.cancel != nil && c.key >= 0 {
		c.cancel()
		// pion sends no alert for a handshake it abandons, so the client
		// would wait for its own timeout (about 30 s for OpenSSL builds of
		// libcoap): a fatal decrypt_error alert, in clear at epoch 0,
		// ends its attempt at once.
		_, _ = c.raw.Write(decryptErrorAlert)
	}
}

// decryptErrorAlert is a DTLS 1.2 record: alert (21), version 1.2, epoch
// 0, a sequence number above any the handshake used, length 2, fatal (2)
// decrypt_error (51).
var decryptErrorAlert = []byte{21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 2, 2, 51}

// handshakeLog is a session's pion logger: it reads pion's note that a
// record did not decrypt, which is how a wrong pre-shared key shows, and
// discards everything else.
type handshakeLog struct{ c *pskConn }

func (l handshakeLog) NewLogger(string) logging.LeveledLogger { return l }
func (l handshakeLog) Trace(string)                           {}
func (l handshakeLog) Tracef(string, ...any)                  {}
func (l handshakeLog) Debug(string)                           {}
func (l handshakeLog) Info(string)                            {}
func (l handshakeLog) Infof(string, ...any)                   {}
func (l handshakeLog) Warn(string)                            {}
func (l handshakeLog) Warnf(string, ...any)                   {}
func (l handshakeLog) Error(string)                           {}
func (l handshakeLog) Errorf(string, ...any)                  {}

// Debugf spots a record that did not decrypt.
func (l handshakeLog) Debugf(format string, _ ...any) {
	if strings.Contains(format, "decrypt failed") {
		l.c.wrongKey()
	}
}

// Device returns the device the session authenticated.
func (c *pskConn) Device() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device
}

// keyChooser picks which of a device's two keys a handshake is offered.
// A DTLS-PSK server must give the handshake one key before it can tell
// whether the client used it, so: the key the device last completed a
// handshake with is tried first (the primary for a device not seen yet);
// after a handshake from an address fails, the next one from that address
// is offered the other key. A device that switches keys therefore sees
// one failed handshake; an attacker failing handshakes from its own
// address does not change what the device's address is offered.
type keyChooser struct {
	mu   sync.Mutex
	good *lru.Cache[string, int]  // device → key index
	flip *lru.Cache[string, bool] // device + address → offer the other key
}

func newKeyChooser(size int) (*keyChooser, error) {
	good, err := lru.New[string, int](size)
	if err != nil {
		return nil, err
	}
	flip, err := lru.New[string, bool](size)
	if err != nil {
		return nil, err
	}
	return &keyChooser{good: good, flip: flip}, nil
}

// choose returns the key index (0 primary, 1 secondary) to offer.
func (k *keyChooser) choose(device, ip string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	base, _ := k.good.Get(device)
	if f, _ := k.flip.Get(device + "\x00" + ip); f {
		return 1 - base
	}
	return base
}

// result records how a handshake offered key fared.
func (k *keyChooser) result(device, ip string, key int, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	at := device + "\x00" + ip
	if ok {
		k.good.Add(device, key)
		k.flip.Remove(at)
		return
	}
	base, _ := k.good.Get(device)
	k.flip.Add(at, 1-key != base)
}

var (
	_ net.Conn              = (*pskConn)(nil)
	_ logging.LoggerFactory = handshakeLog{}
)
