package rewards

import (
	"sync/atomic"
	"time"
)

// Event is one input of a learner: a decision-log record or a label, with
// the time the label was received.
type Event struct {
	Record *Record
	Label  *Label
	At     time.Time
}

// Queue is the in-memory transport of the embedded default: serving logs
// into it, the in-process learner reads from it. It is bounded; a full
// queue refuses rather than blocks, so a slow learner never slows a
// request. Safe for concurrent use.
type Queue struct {
	ch      chan Event
	dropped atomic.Int64
}

// NewQueue returns a queue holding at most n events.
func NewQueue(n int) *Queue { return &Queue{ch: make(chan Event, max(n, 1))} }

// Log enqueues a decision-log record. A full queue drops it, counted in
// Dropped, and Log returns false.
func (q *Queue) Log(r Record) bool {
	select {
	case q.ch <- Event{Record: &r}:
		return true
	default:
		q.dropped.Add(1)
		return false
	}
}

// LogWait enqueues r, waiting until deadline for room when the queue is
// full: for the records a background loop writes (epoch outcomes), which
// may wait for the learner to catch up where a decision may not. Past the
// deadline the record is dropped and counted, as by Log.
func (q *Queue) LogWait(r Record, deadline time.Time) bool {
	ev := Event{Record: &r}
	select {
	case q.ch <- ev:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case q.ch <- ev:
		return true
	case <-t.C:
		q.dropped.Add(1)
		return false
	}
}

// Label enqueues a label received at at. A full queue refuses it and
// Label returns false: the caller must report the failure (HTTP 503) so
// that the sender retries — labels are never dropped silently.
func (q *Queue) Label(l Label, at time.Time) bool {
	select {
	case q.ch <- Event{Label: &l, At: at}:
		return true
	default:
		return false
	}
}

// Events is the queue's output.
func (q *Queue) Events() <-chan Event { return q.ch }

// Dropped returns how many records a full queue dropped.
func (q *Queue) Dropped() int64 { return q.dropped.Load() }

// Len returns the events waiting.
func (q *Queue) Len() int { return len(q.ch) }
