package amqp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	"github.com/Azure/go-amqp"
)

// dial opens a connection and a session to a broker. A URL without user
// information authenticates with SASL ANONYMOUS; amqps:// trusts ca when
// given, the system roots otherwise.
func dial(ctx context.Context, raw, ca string) (*amqp.Conn, *amqp.Session, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: url", ErrInvalid)
	}
	opts := &amqp.ConnOptions{HostName: u.Hostname()}
	if u.User == nil {
		opts.SASLType = amqp.SASLTypeAnonymous()
	}
	if u.Scheme == "amqps" {
		cfg := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if ca != "" {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM([]byte(ca))
			cfg.RootCAs = pool
		}
		opts.TLSConfig = cfg
	}
	conn, err := amqp.Dial(ctx, raw, opts)
	if err != nil {
		return nil, nil, errors.New(Redact(err.Error()))
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("session: %s", Redact(err.Error()))
	}
	return conn, sess, nil
}

// backoff is an exponential delay with jitter: the nth retry waits a random
// time in [d/2, d] with d = base·2ⁿ capped at max, so that many endpoints
// (or nodes) retrying the same broker do not beat in step.
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) next() time.Duration {
	d := b.base << min(b.n, 30)
	if d <= 0 || d > b.max {
		d = b.max
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
