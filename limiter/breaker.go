package limiter

import (
	"sync"
	"sync/atomic"
	"time"
)

// BreakerOptions configures a Breaker.
type BreakerOptions struct {
	// Failures is how many consecutive failures open the circuit. Default: 5.
	Failures int
	// OpenFor is how long the circuit stays open before one probe is let
	// through. It doubles after each failed probe, up to MaxOpenFor.
	// Default: 500ms.
	OpenFor time.Duration
	// MaxOpenFor caps OpenFor's doubling. Default: 10s.
	MaxOpenFor time.Duration
	// Clock returns the current time. Default: time.Now.
	Clock func() time.Time
}

// Breaker is a circuit breaker: closed (calls go through), open (calls are
// refused at once) and half-open (one probe at a time tests the backend).
// The closed path is one atomic load. It is safe for concurrent use.
type Breaker struct {
	opts     BreakerOptions
	open     atomic.Bool
	failures atomic.Int32

	mu        sync.Mutex
	openUntil time.Time
	backoff   time.Duration
	probing   bool
}

// NewBreaker returns a closed Breaker.
func NewBreaker(opts BreakerOptions) *Breaker {
	if opts.Failures <= 0 {
		opts.Failures = 5
	}
	if opts.OpenFor <= 0 {
		opts.OpenFor = 500 * time.Millisecond
	}
	if opts.MaxOpenFor < opts.OpenFor {
		opts.MaxOpenFor = max(10*time.Second, opts.OpenFor)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &Breaker{opts: opts, backoff: opts.OpenFor}
}

// Allow reports whether a call may go to the backend. Every call it allows
// must be followed by Success or Failure.
func (b *Breaker) Allow() bool {
	if !b.open.Load() {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.probing || b.opts.Clock().Before(b.openUntil) {
		return false
	}
	b.probing = true
	return true
}

// Open reports whether the circuit is open or half-open.
func (b *Breaker) Open() bool { return b.open.Load() }

// Success records a call that worked; a successful probe closes the circuit.
func (b *Breaker) Success() {
	if !b.open.Load() {
		if b.failures.Load() != 0 {
			b.failures.Store(0)
		}
		return
	}
	b.mu.Lock()
	b.probing = false
	b.backoff = b.opts.OpenFor
	b.failures.Store(0)
	b.open.Store(false)
	b.mu.Unlock()
}

// Failure records a call that failed. It reports whether this failure opened
// the circuit.
func (b *Breaker) Failure() bool {
	if !b.open.Load() {
		if int(b.failures.Add(1)) < b.opts.Failures {
			return false
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.open.Load() {
			return false
		}
		b.openUntil = b.opts.Clock().Add(b.backoff)
		b.open.Store(true)
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.probing { // the probe failed: stay open, longer
		b.probing = false
		b.backoff = min(2*b.backoff, b.opts.MaxOpenFor)
		b.openUntil = b.opts.Clock().Add(b.backoff)
	}
	return false
}
