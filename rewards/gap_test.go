package rewards

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Where a partition resumes, given the offset to read next and the log's
// bounds: outside them is a gap, and reading resumes at the log start.
func TestResumeOffset(t *testing.T) {
	for name, c := range map[string]struct {
		next, start, end int64
		want             int64
		kind             GapKind
	}{
		"no checkpoint":                   {next: kafka.FirstOffset, start: 5, end: 9, want: 5},
		"inside":                          {next: 7, start: 5, end: 9, want: 7},
		"at the start":                    {next: 5, start: 5, end: 9, want: 5},
		"at the end: nothing new":         {next: 9, start: 5, end: 9, want: 9},
		"past the end: a new log":         {next: 20874, start: 0, end: 9816, want: 0, kind: GapPastEnd},
		"past the end of an empty log":    {next: 43, start: 0, end: 0, want: 0, kind: GapPastEnd},
		"before the start: retention":     {next: 3, start: 5, end: 9, want: 5, kind: GapBeforeStart},
		"before the start of a truncated": {next: 0, start: 9, end: 9, want: 9, kind: GapBeforeStart},
	} {
		t.Run(name, func(t *testing.T) {
			got, kind := resumeOffset(c.next, c.start, c.end)
			if got != c.want || kind != c.kind {
				t.Errorf("resumeOffset(%d, %d, %d) = %d, %q; want %d, %q", c.next, c.start, c.end, got, kind, c.want, c.kind)
			}
		})
	}
}

// A gap before the start counts the messages lost; one past the end none,
// since the new log is read whole.
func TestGapSkipped(t *testing.T) {
	l := &KafkaLearner{o: LearnerOptions{Now: func() time.Time { return t0 }}}
	if g := l.gap("flowguard.labels", 2, GapBeforeStart, 40, 100, 180); g.Skipped != 60 || g.Resume != 100 || !g.At.Equal(t0) {
		t.Errorf("before the start: %+v, want 60 skipped, resume at 100", g)
	}
	if g := l.gap("flowguard.labels", 2, GapPastEnd, 43, 0, 17); g.Skipped != 0 || g.Resume != 0 {
		t.Errorf("past the end: %+v, want nothing skipped, resume at 0", g)
	}
}
