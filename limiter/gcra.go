package limiter

import (
	"errors"
	"fmt"
	"time"
)

// Limit is a request budget: Rate requests per Period, with up to Burst
// requests admitted at once. It is a value type; the zero Limit admits
// nothing.
type Limit struct {
	Rate   int64         // requests per Period
	Burst  int64         // requests admitted back to back; Default: Rate
	Period time.Duration // Default: 1s
}

// PerSecond returns a Limit of rate requests per second with burst = rate.
func PerSecond(rate int64) Limit { return Limit{Rate: rate, Burst: rate, Period: time.Second} }

// PerMinute returns a Limit of rate requests per minute with burst = rate.
func PerMinute(rate int64) Limit { return Limit{Rate: rate, Burst: rate, Period: time.Minute} }

// ErrInvalidLimit is returned for a Limit that cannot be enforced.
var ErrInvalidLimit = errors.New("limiter: invalid limit")

// Validate reports whether l can be enforced.
func (l Limit) Validate() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("%w: rate %d must be positive", ErrInvalidLimit, l.Rate)
	case l.Burst <= 0:
		return fmt.Errorf("%w: burst %d must be positive", ErrInvalidLimit, l.Burst)
	case l.Period < time.Microsecond:
		return fmt.Errorf("%w: period %s must be at least 1µs", ErrInvalidLimit, l.Period)
	case l.Period.Microseconds()/l.Rate < 1:
		return fmt.Errorf("%w: %d per %s is faster than one request per microsecond", ErrInvalidLimit, l.Rate, l.Period)
	}
	return nil
}

// interval is the emission interval T in microseconds: the steady-state gap
// between two admitted requests. Integer division rounds the rate up by less
// than one part in T.
func (l Limit) interval() int64 { return l.Period.Microseconds() / l.Rate }

// Scale returns l with Rate and Burst multiplied by m, rounded to the
// nearest integer and never below 1. It is how a budget multiplier and a
// per-instance share are applied.
func (l Limit) Scale(m float64) Limit {
	l.Rate = scaleCount(l.Rate, m)
	l.Burst = scaleCount(l.Burst, m)
	return l
}

func scaleCount(n int64, m float64) int64 {
	v := int64(float64(n)*m + 0.5)
	if v < 1 {
		return 1
	}
	return v
}

// Result is the outcome of one decision.
type Result struct {
	// Allowed is the cost admitted: the request's cost, or 0 if throttled.
	Allowed int64
	// Remaining is how many more unit-cost requests would be admitted right now.
	Remaining int64
	// RetryAfter is how long until this request would be admitted; 0 when
	// allowed, -1 when it can never be (its cost exceeds the burst).
	RetryAfter time.Duration
	// ResetAfter is how long until the budget is whole again.
	ResetAfter time.Duration
}

// OK reports whether the request was admitted.
func (r Result) OK() bool { return r.Allowed > 0 }

// ErrInvalidCost is returned for a cost below 1.
var ErrInvalidCost = errors.New("limiter: cost must be at least 1")

// gcra decides a request of cost n at time now (µs) against a key whose
// theoretical arrival time is tat (µs, 0 = never seen). When admitted it
// takes as much as it can up to upTo ≥ n, which is how a lease takes a chunk
// of budget in one step; a plain decision has upTo = n. It returns the tat to
// store (unchanged when throttled). The Redis script in gcra.lua is a
// line-by-line translation of this function: keep them in step.
func gcra(tat, now int64, l Limit, n, upTo int64) (int64, Result) {
	t := l.interval()
	if tat < now {
		tat = now
	}
	room := t*l.Burst - (tat - now) // budget left, in µs of emission time
	avail := max(room, 0) / t
	if n > l.Burst {
		return tat, Result{Remaining: avail, RetryAfter: -1, ResetAfter: micros(tat - now)}
	}
	if n > avail {
		return tat, Result{Remaining: avail, RetryAfter: micros(n*t - room), ResetAfter: micros(tat - now)}
	}
	granted := min(upTo, avail)
	tat += granted * t
	return tat, Result{Allowed: granted, Remaining: avail - granted, ResetAfter: micros(tat - now)}
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// AdmitSpread is gcra for n requests of cost 1 arriving evenly over span
// from start (µs), the simulator's key-epoch: it returns how many are
// admitted and the tat to store. It is the fluid limit of calling gcra once
// per arrival: the budget left at start plus what the span refills, never
// more than the arrivals, and a bucket that is full at the end when the
// arrivals used less than the refill. A span of 0 is gcra with upTo = n.
func AdmitSpread(tat, start, span int64, l Limit, n int64) (int64, int64) {
	if n <= 0 {
		return tat, 0
	}
	t := l.interval()
	if tat < start {
		tat = start
	}
	avail := max(t*l.Burst-(tat-start), 0) / t
	admitted := min(n, avail+max(span, 0)/t)
	return max(tat+admitted*t, start+span), admitted
}
