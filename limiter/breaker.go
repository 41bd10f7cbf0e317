package limiter

import (
	"sync"
	"sync/atomic"
	"time"
)

// BreakerOptions configures a Breaker.
type BreakerOptions struct {
	// FailureRate is the share of failed calls over Window that opens the
	// circuit, once Window holds at least MinCalls calls. Default: 0.5.
	FailureRate float64
	// MinCalls is the fewest calls in Window the failure rate is judged on:
	// below it the circuit stays closed whatever fails. Default: 10.
	MinCalls int
	// Window is how far back the failure rate looks, in ten buckets. It is
	// short so that a real outage opens the circuit fast: the successes from
	// before it leave the window within Window. Default: 50ms.
	Window time.Duration
	// OpenFor is how long the circuit stays open before the half-open ramp
	// starts. It doubles each time the ramp fails, up to MaxOpenFor.
	// Default: 500ms.
	OpenFor time.Duration
	// MaxOpenFor caps OpenFor's doubling. Default: 10s.
	MaxOpenFor time.Duration
	// Clock returns the current time. Default: time.Now.
	Clock func() time.Time
}

// Breaker states.
const (
	breakerClosed int32 = iota
	breakerOpen
	breakerHalfOpen
)

// rampSteps is the half-open ramp: step s lets one call in 2^(rampSteps-s)
// through (1/8, 1/4, 1/2), and the circuit closes after the last.
const rampSteps = 3

const breakerBuckets = 10

// Breaker is a circuit breaker judged on the failure rate of the calls in a
// rolling window: closed (calls go through), open (calls are refused) and
// half-open, a ramp that lets a growing share of the calls through (1/8,
// 1/4, 1/2) and closes when each step's calls succeed. Calls are reported
// with Record (or Success and Failure) by whoever makes them, and only those
// that tell something about the backend: a call that never reached it
// (no free connection, no CPU in time) is not reported at all.
//
// The closed path of Allow is one atomic load. It is safe for concurrent use.
type Breaker struct {
	opts     BreakerOptions
	bucketUs int64
	state    atomic.Int32
	admitted atomic.Int64  // half-open: calls asked for in this step
	opens    *atomic.Int64 // counts the openings from closed, when set

	mu        sync.Mutex
	buckets   [breakerBuckets]breakerBucket
	openUntil time.Time
	backoff   time.Duration
	step      int
	stepOK    int
	stepFail  int
}

type breakerBucket struct {
	at       int64 // bucket index: µs / bucketUs
	ok, fail int
}

// NewBreaker returns a closed Breaker.
func NewBreaker(opts BreakerOptions) *Breaker {
	if opts.FailureRate <= 0 || opts.FailureRate > 1 {
		opts.FailureRate = 0.5
	}
	if opts.MinCalls <= 0 {
		opts.MinCalls = 10
	}
	if opts.Window <= 0 {
		opts.Window = 50 * time.Millisecond
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
	return &Breaker{opts: opts, backoff: opts.OpenFor, bucketUs: max(1, opts.Window.Microseconds()/breakerBuckets)}
}

// Allow reports whether a call may go to the backend. While the circuit is
// closed it always does; while open never; during the half-open ramp one
// call in 8, then 4, then 2.
func (b *Breaker) Allow() bool {
	switch b.state.Load() {
	case breakerClosed:
		return true
	case breakerOpen:
		b.mu.Lock()
		if b.state.Load() == breakerOpen {
			if b.opts.Clock().Before(b.openUntil) {
				b.mu.Unlock()
				return false
			}
			b.step, b.stepOK, b.stepFail = 0, 0, 0
			b.admitted.Store(0)
			b.state.Store(breakerHalfOpen)
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() != breakerHalfOpen {
		return b.state.Load() == breakerClosed
	}
	return (b.admitted.Add(1)-1)%(1<<(rampSteps-b.step)) == 0
}

// Open reports whether the circuit is open or half-open.
func (b *Breaker) Open() bool { return b.state.Load() != breakerClosed }

// Success records a call that worked.
func (b *Breaker) Success() { b.Record(1, 0) }

// Failure records a call that failed. It reports whether this failure opened
// the circuit.
func (b *Breaker) Failure() bool { return b.Record(0, 1) }

// Record records ok calls that worked and fail that failed (a pipeline
// reports its commands at once). It reports whether they opened the circuit.
func (b *Breaker) Record(ok, fail int) bool {
	if ok == 0 && fail == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Clock()
	switch b.state.Load() {
	case breakerClosed:
		at := now.UnixMicro() / b.bucketUs
		bk := &b.buckets[at%breakerBuckets]
		if bk.at != at {
			*bk = breakerBucket{at: at}
		}
		bk.ok += ok
		bk.fail += fail
		if fail == 0 {
			return false
		}
		calls, fails := 0, 0
		for i := range b.buckets {
			if at-b.buckets[i].at < breakerBuckets {
				calls += b.buckets[i].ok + b.buckets[i].fail
				fails += b.buckets[i].fail
			}
		}
		if calls >= b.opts.MinCalls && float64(fails) >= b.opts.FailureRate*float64(calls) {
			b.openLocked(now)
			if b.opens != nil {
				b.opens.Add(1)
			}
			return true
		}
	case breakerHalfOpen:
		b.stepOK += ok
		b.stepFail += fail
		need := b.stepCalls()
		if b.stepFail >= need && float64(b.stepFail) >= b.opts.FailureRate*float64(b.stepOK+b.stepFail) {
			// The ramp failed: open again, for longer.
			b.backoff = min(2*b.backoff, b.opts.MaxOpenFor)
			b.openLocked(now)
			return false
		}
		if b.stepOK >= need {
			b.step++
			b.stepOK, b.stepFail = 0, 0
			b.admitted.Store(0)
			if b.step == rampSteps {
				b.backoff = b.opts.OpenFor
				b.buckets = [breakerBuckets]breakerBucket{}
				b.state.Store(breakerClosed)
			}
		}
	}
	return false
}

// stepCalls is how many successes complete a ramp step, and how many
// failures can end it: a quarter of MinCalls, at least one.
func (b *Breaker) stepCalls() int { return max(1, b.opts.MinCalls/4) }

func (b *Breaker) openLocked(now time.Time) {
	b.openUntil = now.Add(b.backoff)
	b.state.Store(breakerOpen)
}
