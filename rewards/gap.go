package rewards

import (
	"time"

	"github.com/segmentio/kafka-go"
)

// GapKind says on which side of a partition's log the offset a learner was
// to read next fell.
type GapKind string

const (
	// GapPastEnd: the offset is past the log's end. The broker lost the
	// log the checkpoint was taken on (an in-memory broker restarted, an
	// unclean leader election truncated it, the topic was recreated), so
	// the log there now is one the learner has never read: it resumes from
	// the log's start, where labels accepted during the gap are.
	GapPastEnd GapKind = "past_end"
	// GapBeforeStart: the offset is before the log's start. Retention or
	// DeleteRecords removed messages the learner had not read; it resumes
	// from the log's start and counts those messages lost.
	GapBeforeStart GapKind = "before_start"
)

// OffsetGap is an offset to read found outside its partition's log, at
// start from a checkpoint or when a fetch failed with OffsetOutOfRange.
type OffsetGap struct {
	Topic     string
	Partition int
	Kind      GapKind
	// Checkpoint is the offset the learner was to read next.
	Checkpoint int64
	// LogStart and LogEnd are the log's first offset and its end (the next
	// offset to be written) when the gap was seen.
	LogStart, LogEnd int64
	// Resume is where the learner resumed: LogStart.
	Resume int64
	// Skipped is the messages the learner can never read: LogStart −
	// Checkpoint before the start, 0 past the end (the new log is read
	// whole; what the lost log held past the checkpoint is unknowable).
	Skipped int64
	// At is when the learner saw it (LearnerOptions.Now).
	At time.Time
}

// Policy says what the learner did about the gap, for its log line.
func (g OffsetGap) Policy() string {
	if g.Kind == GapPastEnd {
		return "resume from the log start: the broker's log is new, read it whole"
	}
	return "resume from the log start: the messages before it are lost"
}

// resumeOffset returns where to read a partition whose log spans
// [start, end) when the next offset to read is next (kafka.FirstOffset
// without a checkpoint), and the kind of gap when next lies outside the
// log ("" when it does not). next == end is inside: nothing new yet.
func resumeOffset(next, start, end int64) (int64, GapKind) {
	switch {
	case next == kafka.FirstOffset:
		return start, ""
	case next > end:
		return start, GapPastEnd
	case next < start:
		return start, GapBeforeStart
	}
	return next, ""
}

// gapTally is the gaps of one topic, partition and kind since the learner
// started.
type gapTally struct {
	n, skipped int64
	last       OffsetGap
}

type gapKey struct {
	topic     string
	partition int
	kind      GapKind
}

// GapCount is the offset gaps of one topic, partition and kind since the
// learner started, as LearnerStats reports them.
type GapCount struct {
	Topic     string
	Partition int
	Kind      GapKind
	// Gaps is how many were seen, Skipped the messages they skipped.
	Gaps, Skipped int64
	// Last is the latest.
	Last OffsetGap
}
