package limiter

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// A call that ran out of time is Redis's fault only when Redis itself was
// slow. On a machine whose cores are saturated, most timeouts are not: the
// goroutine waited for a CPU before it wrote the command, or Redis answered
// in a fraction of a millisecond and the goroutine was woken by the read
// deadline before the poller noticed the reply. Counting those as failures
// opened the circuit dozens of times a second with Redis healthy (issue 19).
//
// watchedConn tells them apart at the socket: it records when each command
// was written, and when a read times out it looks (MSG_PEEK, without
// consuming) whether the reply is already waiting. A timeout with the reply
// waiting, or less than the budget after the write, is an excusedTimeout.

// excusedTimeout is a timeout that Redis did not cause. It is still a
// timeout for the decision (reason redis_timeout, a net.Error whose Timeout
// is true, as go-redis expects), but not a failure for the breaker. It has
// no Unwrap: go-redis unwraps a failed connection handshake's error once
// (initPooledConn), which would drop the mark.
type excusedTimeout struct{ err error }

func (e *excusedTimeout) Error() string   { return e.err.Error() + " (redis was not slow)" }
func (e *excusedTimeout) Timeout() bool   { return true }
func (e *excusedTimeout) Temporary() bool { return true }

// errLeaseWait is returned to a decision that waited its timeout for a
// lease the batch had not brought yet: a timeout, and no Redis failure.
var errLeaseWait error = &excusedTimeout{err: context.DeadlineExceeded}

// redisFault reports whether err, from a call to Redis, says something
// about Redis: the breaker counts it as a failure. Not faults: the caller
// cancelling, no connection free in time, a deadline that passed before the
// command reached Redis, and excused timeouts.
func redisFault(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrPoolTimeout) {
		return false
	}
	var ex *excusedTimeout
	if errors.As(err, &ex) {
		return false
	}
	var oe *net.OpError
	if errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &oe) {
		return false // go-redis gave up before any I/O: the deadline passed waiting for a CPU or a connection
	}
	return true
}

// watchedConn is a connection to Redis that knows when its last command
// was written.
type watchedConn struct {
	net.Conn
	budget  time.Duration
	wroteAt atomic.Int64 // ns, monotonic via time.Since(base)
}

var connBase = time.Now()

func (c *watchedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.wroteAt.Store(int64(time.Since(connBase)))
	var ne net.Error
	if err != nil && n == 0 && errors.As(err, &ne) && ne.Timeout() {
		// The deadline passed before a byte was written: time spent
		// waiting for a CPU, not a Redis that stopped reading (that fills
		// the socket's buffer first, and shows in the reads).
		return n, &excusedTimeout{err: err}
	}
	return n, err
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		waited := time.Since(connBase) - time.Duration(c.wroteAt.Load())
		if waited < c.budget || c.replyWaiting() {
			return n, &excusedTimeout{err: err}
		}

	}
	return n, err
}

// replyWaiting reports whether bytes from Redis sit unread in the socket.
func (c *watchedConn) replyWaiting() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	waiting := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		waiting = err == nil && n > 0
	})
	return waiting
}

// watchedDialer dials like go-redis's own dialer (TCP, then TLS when
// configured) and wraps the TCP connection in a watchedConn.
func watchedDialer(o *redis.UniversalOptions, budget time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 5 * time.Minute}
	tlsConfig := o.TLSConfig
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		var c net.Conn = &watchedConn{Conn: conn, budget: budget}
		if tlsConfig != nil {
			cfg := tlsConfig.Clone()
			if cfg.ServerName == "" {
				if host, _, err := net.SplitHostPort(addr); err == nil {
					cfg.ServerName = host
				}
			}
			c = tls.Client(c, cfg)
		}
		return c, nil
	}
}
