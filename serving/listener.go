package serving

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// exhaustedListener keeps a listener accepting through resource
// exhaustion. When accept fails because the process or the system is out
// of descriptors or buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM) or the
// client went away before it was accepted (ECONNABORTED), it waits — 5 ms,
// doubling to 1 s — and accepts again, instead of returning the error that
// makes fasthttp's Serve, and with it the process, end. The first failure
// of a burst is logged; every one is counted. Close ends Accept as usual.
type exhaustedListener struct {
	net.Listener
	log      *slog.Logger
	failures prometheus.Counter
	sleep    func(time.Duration)
}

// acceptExhausted reports whether an accept error is one to wait out.
func acceptExhausted(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *exhaustedListener) Accept() (net.Conn, error) {
	delay := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil || !acceptExhausted(err) {
			return c, err
		}
		l.failures.Inc()
		if delay == 5*time.Millisecond {
			l.log.Warn("accept failed for lack of resources; waiting and accepting again", "err", err)
		}
		l.sleep(delay)
		delay = min(2*delay, time.Second)
	}
}
