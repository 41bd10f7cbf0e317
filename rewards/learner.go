package rewards

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/devflow/flowguard/internal/topics"
)

// KafkaLearner is the learner of the scaled-out mode (`flowguard learn`):
// a member of a Kafka consumer group over the decisions and labels topics.
// Both topics are keyed by API key with the same partitioner and have the
// same number of partitions, so partition P of each holds the same keys;
// the range balancer gives each member the same partition numbers of both
// topics, and the member runs one Partition per number.
//
// Exactly-once effect: a partition's state and the offsets it includes are
// checkpointed together in Redis, fenced against zombie members; on
// assignment the partition resumes from its checkpoint's offsets, whatever
// the group's committed offsets say. Offsets are committed to Kafka only
// after the checkpoint holding them is stored, for lag monitoring. Labels
// are deduplicated by label_id, so a label resent by its producer is
// applied once too.
//
// Determinism: within a partition the two topics are merged by message
// timestamp, waiting for a topic that is known to have more messages. A
// learner killed at any point and restarted from its checkpoint therefore
// reaches the model an uninterrupted run reaches over the same input.
//
// Offset gaps: when the offset to read next is outside the partition's
// log — past its end, because the broker lost the log (an in-memory broker
// restarted, an unclean leader election, a recreated topic), or before its
// start, because retention deleted what was not read yet — the learner
// resumes from the log's start and reports the gap (OffsetGap): counted in
// Stats, logged at ERROR. It checks at start from a checkpoint, whenever a
// fetch fails with OffsetOutOfRange, and while idle; kafka-go's Reader
// would otherwise wait past the end, or skip to the start, silently. After
// a gap past the end the new log is read whole, so labels are still
// applied once each (label_id); decision records read before the gap and
// read again are learned again, since a decision is deduplicated by its id
// only while it waits for its outcome.
//
// Malformed messages, and messages the partition refuses, go to the DLQ
// topic with the reason in headers; consumption goes on. DLQ writes are
// flushed before each checkpoint, so a crash can repeat a DLQ message but
// never lose one.
type KafkaLearner struct {
	o      LearnerOptions
	dlq    *kafka.Writer
	models *kafka.Writer
	client *kafka.Client

	mu    sync.Mutex
	parts map[int]PartitionStatus
	gaps  map[gapKey]*gapTally

	// kafkaErr is the last failure to reach Kafka, nil since a success.
	kafkaErr atomic.Pointer[kafkaFailure]

	// variants are the variant models in force; vgen counts SetVariants
	// calls, so that each partition applies a change once.
	variants atomic.Pointer[[]VariantModel]
	vgen     atomic.Int64

	// Counters; see LearnerStats.
	dlqCount, fenced, ckptFailures atomic.Int64
	published, publishFailures     atomic.Int64
	commitFailures                 atomic.Int64
	applied                        atomic.Int64 // messages applied or sent to the DLQ

	// partitions is the topics' partition count, set by checkTopics before
	// any partition runs: a label's key must map to the partition it is
	// read from, by the murmur2 mapping serving's writer uses.
	partitions int

	pace time.Duration // tests: a pause every 10 messages, to be killed mid-stream
}

// LearnerOptions configures NewKafkaLearner.
type LearnerOptions struct {
	// Config configures each partition's state. Required.
	Config Config
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Group is the consumer group. Default: topics.LearnerGroup
	// (flowguard-learner).
	Group string
	// Topics. Defaults: topics.Decisions, topics.Labels, topics.DLQ and
	// topics.Models (flowguard.decisions, flowguard.labels,
	// flowguard.labels.dlq, flowguard.models).
	DecisionsTopic, LabelsTopic, DLQTopic, ModelsTopic string
	// Store keeps checkpoints and publishes model parts. Required.
	Store *RedisStore
	// CheckpointEvery is how often each partition checkpoints, publishes
	// its model part and commits its offsets. Default: 5s.
	CheckpointEvery time.Duration
	// Dialer and Transport carry TLS and SASL settings, for the readers and
	// group and for the writers and client. Default: kafka-go's.
	Dialer    *kafka.Dialer
	Transport *kafka.Transport
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (killed) before giving its partitions to another.
	// Default: 10s.
	SessionTimeout time.Duration
	// Now stamps checkpoints and model parts. Default: time.Now.
	Now func() time.Time
	// Logger reports rebalances and failures. Default: nil, silent.
	Logger *slog.Logger
	// LabelLag, when set, receives the time from each label's Kafka
	// timestamp to its application.
	LabelLag func(time.Duration)
}

// Validate reports the first invalid option.
func (o LearnerOptions) Validate() error {
	if len(o.Brokers) == 0 {
		return errors.New("rewards: learner: no brokers")
	}
	if o.Store == nil {
		return errors.New("rewards: learner: no checkpoint store (the learner needs redis:)")
	}
	if o.CheckpointEvery < 0 {
		return errors.New("rewards: learner: negative checkpoint interval")
	}
	return o.Config.Validate()
}

// PartitionStatus is one partition's progress, as Stats reports it.
type PartitionStatus struct {
	Partition int
	Stats
	// Next is the next offset to read, by topic; HighWatermark the end of
	// each topic's partition when last seen. Their difference is the lag.
	Next, HighWatermark map[string]int64
	// Checkpointed is when the last checkpoint was stored.
	Checkpointed time.Time
	Watermark    time.Time
}

// LearnerStats is what the learner has done so far.
type LearnerStats struct {
	Partitions                 []PartitionStatus // the partitions this member owns, sorted
	Messages                   int64             // messages consumed (applied or sent to the DLQ) since start
	DLQ                        int64             // messages sent to the DLQ
	Fenced                     int64             // writes refused because another member owns the partition
	CheckpointFailures         int64
	Published, PublishFailures int64 // model parts published to Redis
	CommitFailures             int64 // offset commits Kafka refused (harmless: checkpoints hold the offsets)
	// Gaps are the offset gaps seen since start, by topic, partition and
	// kind, sorted.
	Gaps []GapCount
	// KafkaError is the last failure to reach Kafka (listing offsets,
	// joining the group, fetching, writing the DLQ), "" once a call
	// succeeded since; KafkaErrorSince is when the failures began.
	KafkaError      string
	KafkaErrorSince time.Time
}

// kafkaFailure is a run of failed Kafka calls.
type kafkaFailure struct {
	err   string
	since time.Time
}

// kafkaFailed records a failure to reach Kafka.
func (l *KafkaLearner) kafkaFailed(err error) {
	f := &kafkaFailure{err: err.Error(), since: l.o.Now()}
	if cur := l.kafkaErr.Load(); cur != nil {
		f.since = cur.since
	}
	l.kafkaErr.Store(f)
}

// kafkaOK records a Kafka call that succeeded.
func (l *KafkaLearner) kafkaOK() {
	if l.kafkaErr.Load() != nil {
		l.kafkaErr.Store(nil)
	}
}

// NewKafkaLearner returns a learner; Run starts it.
func NewKafkaLearner(o LearnerOptions) (*KafkaLearner, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Group == "" {
		o.Group = topics.LearnerGroup
	}
	for _, t := range []struct {
		v *string
		d string
	}{{&o.DecisionsTopic, topics.Decisions}, {&o.LabelsTopic, topics.Labels},
		{&o.DLQTopic, topics.DLQ}, {&o.ModelsTopic, topics.Models}} {
		if *t.v == "" {
			*t.v = t.d
		}
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := func(topic string) *kafka.Writer {
		w := &kafka.Writer{Addr: kafka.TCP(o.Brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll, WriteTimeout: 10 * time.Second, BatchTimeout: time.Millisecond,
			BatchSize: 1000, MaxAttempts: 5}
		if o.Transport != nil {
			w.Transport = o.Transport
		}
		return w
	}
	c := &kafka.Client{Addr: kafka.TCP(o.Brokers...), Timeout: 10 * time.Second}
	if o.Transport != nil {
		c.Transport = o.Transport
	}
	l := &KafkaLearner{o: o, dlq: w(o.DLQTopic), models: w(o.ModelsTopic), client: c,
		parts: map[int]PartitionStatus{}, gaps: map[gapKey]*gapTally{}}
	vs := o.Config.Variants
	l.variants.Store(&vs)
	return l, nil
}

// SetVariants makes vs the variant models every partition trains, from its
// next message or checkpoint on (Partition.SetVariants): the experiments
// file changed. Safe for concurrent use.
func (l *KafkaLearner) SetVariants(vs []VariantModel) error {
	if err := validateVariants(vs, l.o.Config.Bandit.Dim); err != nil {
		return err
	}
	vs = slices.Clone(vs)
	l.variants.Store(&vs)
	l.vgen.Add(1)
	return nil
}

// Variants returns the variant models in force (the last SetVariants).
func (l *KafkaLearner) Variants() []VariantModel { return slices.Clone(*l.variants.Load()) }

// syncVariants applies the variant models in force if they changed since
// the partition last applied them.
func (r *partitionRun) syncVariants() {
	g := r.l.vgen.Load()
	if g == r.vgen {
		return
	}
	r.vgen = g
	ch, err := r.part.SetVariants(*r.l.variants.Load())
	if err != nil {
		r.l.o.Logger.Error("learner: variant models", "partition", r.p, "err", err)
		return
	}
	if !ch.Empty() {
		r.dirty = true
		r.l.o.Logger.Info("learner: variant models changed", "partition", r.p, "added", ch.Added, "dropped", ch.Removed)
	}
}

// Stats returns the learner's progress. Safe for concurrent use.
func (l *KafkaLearner) Stats() LearnerStats {
	l.mu.Lock()
	s := LearnerStats{Partitions: make([]PartitionStatus, 0, len(l.parts))}
	for _, p := range l.parts {
		s.Partitions = append(s.Partitions, p)
	}
	for k, g := range l.gaps {
		s.Gaps = append(s.Gaps, GapCount{Topic: k.topic, Partition: k.partition, Kind: k.kind, Gaps: g.n, Skipped: g.skipped, Last: g.last})
	}
	l.mu.Unlock()
	sort.Slice(s.Partitions, func(i, j int) bool { return s.Partitions[i].Partition < s.Partitions[j].Partition })
	sort.Slice(s.Gaps, func(i, j int) bool {
		a, b := s.Gaps[i], s.Gaps[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Kind < b.Kind
	})
	if f := l.kafkaErr.Load(); f != nil {
		s.KafkaError, s.KafkaErrorSince = f.err, f.since
	}
	s.Messages, s.DLQ, s.Fenced, s.CheckpointFailures = l.applied.Load(), l.dlqCount.Load(), l.fenced.Load(), l.ckptFailures.Load()
	s.Published, s.PublishFailures, s.CommitFailures = l.published.Load(), l.publishFailures.Load(), l.commitFailures.Load()
	return s
}

// Run consumes until ctx is cancelled, then checkpoints every partition it
// owns and leaves the group. It returns an error only when the topics
// cannot be used at all (missing, or with different partition counts).
func (l *KafkaLearner) Run(ctx context.Context) error {
	defer l.dlq.Close()
	defer l.models.Close()
	if err := l.checkTopics(ctx); err != nil {
		l.kafkaFailed(err)
		return err
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: l.o.Group, Brokers: l.o.Brokers, Dialer: l.o.Dialer,
		Topics:         []string{l.o.DecisionsTopic, l.o.LabelsTopic},
		GroupBalancers: []kafka.GroupBalancer{kafka.RangeGroupBalancer{}},
		StartOffset:    kafka.FirstOffset, HeartbeatInterval: time.Second, SessionTimeout: l.o.SessionTimeout,
		RebalanceTimeout: l.o.SessionTimeout, JoinGroupBackoff: time.Second,
	})
	if err != nil {
		return fmt.Errorf("rewards: learner: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { cg.Close() })
	defer stop()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				cg.Close()
				return nil
			}
			l.o.Logger.Warn("learner: joining the group", "group", l.o.Group, "err", err)
			l.kafkaFailed(err)
			continue
		}
		l.kafkaOK()
		l.startGeneration(gen)
	}
}

// checkTopics fails unless the decisions and labels topics exist with the
// same number of partitions: otherwise one key's decisions and labels
// would land on different partition numbers.
func (l *KafkaLearner) checkTopics(ctx context.Context) error {
	md, err := l.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{l.o.DecisionsTopic, l.o.LabelsTopic}})
	if err != nil {
		return fmt.Errorf("rewards: learner: reading topic metadata: %w", err)
	}
	n := map[string]int{}
	for _, t := range md.Topics {
		if t.Error != nil {
			return fmt.Errorf("rewards: learner: topic %s: %w", t.Name, t.Error)
		}
		n[t.Name] = len(t.Partitions)
	}
	d, lb := n[l.o.DecisionsTopic], n[l.o.LabelsTopic]
	if d == 0 || lb == 0 {
		return fmt.Errorf("rewards: learner: topics %s (%d partitions) and %s (%d partitions) must exist",
			l.o.DecisionsTopic, d, l.o.LabelsTopic, lb)
	}
	if d != lb {
		return fmt.Errorf("rewards: learner: %s has %d partitions and %s %d; they must have the same count",
			l.o.DecisionsTopic, d, l.o.LabelsTopic, lb)
	}
	l.partitions = d
	return nil
}

// ErrWrongPartition is the error of a label read from a partition that does
// not own its key (a producer that did not use the murmur2 partitioner):
// the key's decisions live on another partition, so it could never apply.
var ErrWrongPartition = errors.New("label on a partition that does not own its key")

// KeyPartition is the partition of n that owns key: kafka-go's (and Java
// Kafka's) murmur2 partitioner, which serving's writers use.
func KeyPartition(key string, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(key)}, parts...)
}

func (l *KafkaLearner) startGeneration(gen *kafka.Generation) {
	mine := map[int]bool{}
	for _, a := range gen.Assignments[l.o.DecisionsTopic] {
		mine[a.ID] = true
	}
	var parts []int
	for _, a := range gen.Assignments[l.o.LabelsTopic] {
		if mine[a.ID] {
			parts = append(parts, a.ID)
		}
	}
	sort.Ints(parts)
	l.mu.Lock()
	clear(l.parts)
	l.mu.Unlock()
	l.o.Logger.Info("learner: assigned", "generation", gen.ID, "member", gen.MemberID, "partitions", parts)
	for _, p := range parts {
		gen.Start(func(ctx context.Context) {
			if err := l.runPartition(ctx, gen, p); err != nil && ctx.Err() == nil {
				l.o.Logger.Error("learner: partition stopped; rejoining", "partition", p, "err", err)
			}
		})
	}
}

// topicStream is one topic's partition as the merge sees it.
type topicStream struct {
	topic    string
	ch       chan streamItem
	head     *kafka.Message
	caughtUp bool  // no message is known to be waiting
	hwm      int64 // the partition's end when last seen
}

type streamItem struct {
	msg      kafka.Message
	has      bool
	caughtUp bool
	hwm      int64
	err      error
	// gap, when set, is an offset gap: reading resumes at gap.Resume.
	gap *OffsetGap
}

func (s *topicStream) take(it streamItem) error {
	if it.err != nil {
		return it.err
	}
	if it.gap != nil {
		s.hwm = it.gap.LogEnd // the old log's end means nothing now
	}
	if it.has {
		m := it.msg
		s.head = &m
	}
	s.caughtUp, s.hwm = it.caughtUp, max(s.hwm, it.hwm)
	return nil
}

// take passes it to s; a gap is counted and logged, and the partition's
// offset moves to where reading resumes, so that the next checkpoint
// holds it. A stream takes an item only while it has no head, so no
// message read before the gap is still to be applied.
func (r *partitionRun) take(s *topicStream, it streamItem) error {
	if g := it.gap; g != nil {
		r.l.noteGap(*g)
		r.part.Offsets[s.topic] = g.Resume
		r.dirty = true
	}
	return s.take(it)
}

// noteGap counts and logs an offset gap.
func (l *KafkaLearner) noteGap(g OffsetGap) {
	l.mu.Lock()
	k := gapKey{topic: g.Topic, partition: g.Partition, kind: g.Kind}
	t := l.gaps[k]
	if t == nil {
		t = &gapTally{}
		l.gaps[k] = t
	}
	t.n++
	t.skipped += g.Skipped
	t.last = g
	l.mu.Unlock()
	l.o.Logger.Error("learner: offset gap: the offset to read is outside the partition's log",
		"topic", g.Topic, "partition", g.Partition, "kind", string(g.Kind), "checkpoint_offset", g.Checkpoint,
		"log_start", g.LogStart, "log_end", g.LogEnd, "resume_offset", g.Resume, "skipped_messages", g.Skipped,
		"policy", g.Policy())
}

// partitionRun is one partition's consumption in one generation.
type partitionRun struct {
	l        *KafkaLearner
	gen      *kafka.Generation
	p        int
	owner    string
	part     *Partition
	dlq      []kafka.Message
	dirty    bool
	streams  [2]*topicStream // decisions, labels
	lastCkpt time.Time
	vgen     int64 // the KafkaLearner.vgen the partition's variant models are of
}

func (l *KafkaLearner) runPartition(ctx context.Context, gen *kafka.Generation, p int) error {
	r := &partitionRun{l: l, gen: gen, p: p, owner: gen.MemberID + "/" + strconv.Itoa(int(gen.ID))}
	if err := l.o.Store.Claim(ctx, p, r.owner); err != nil {
		return fmt.Errorf("claiming partition %d: %w", p, err)
	}
	data, err := l.o.Store.LoadCheckpoint(ctx, p)
	if err != nil {
		return fmt.Errorf("loading partition %d's checkpoint: %w", p, err)
	}
	cfg := l.o.Config
	r.vgen = l.vgen.Load()
	cfg.Variants = *l.variants.Load()
	if data != nil {
		if r.part, err = RestorePartition(cfg, data); err != nil {
			// A damaged checkpoint stops the partition rather than
			// silently relearning from scratch: an operator decides.
			return fmt.Errorf("partition %d: %w", p, err)
		}
	} else if r.part, err = NewPartition(cfg); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i, topic := range []string{l.o.DecisionsTopic, l.o.LabelsTopic} {
		from, ok := r.part.Offsets[topic]
		if !ok {
			from = kafka.FirstOffset
		}
		s := &topicStream{topic: topic, ch: make(chan streamItem, 256)}
		r.streams[i] = s
		wg.Add(1)
		go func() { defer wg.Done(); l.read(sctx, s, p, from) }()
	}
	l.o.Logger.Info("learner: partition resumed", "partition", p, "offsets", r.part.Offsets, "restored", data != nil)
	r.status()
	err = r.consume(ctx)
	// The generation ended (rebalance or shutdown) or reading failed: keep
	// what was applied. The partition's context is done, so use a fresh one.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer fcancel()
	if cerr := r.checkpoint(fctx, true); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// read feeds s from Kafka, starting at offset from, until ctx is done.
// An offset outside the partition's log, at start or later, is a gap: it
// is sent on s.ch and reading resumes at the log's start.
func (l *KafkaLearner) read(ctx context.Context, s *topicStream, p int, from int64) {
	send := func(it streamItem) bool {
		select {
		case s.ch <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	next := from
	for started := false; ; started = true {
		first, end, err := l.offsets(ctx, s.topic, p)
		if err != nil {
			if !started {
				// At start: the partition stops, as before any gap logic.
				send(streamItem{err: err})
				return
			}
			// After an OffsetOutOfRange: retry until the log answers.
			l.o.Logger.Warn("learner: listing offsets", "topic", s.topic, "partition", p, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		resume, kind := resumeOffset(next, first, end)
		if kind != "" {
			g := l.gap(s.topic, p, kind, next, first, end)
			if !send(streamItem{gap: &g}) {
				return
			}
		}
		next = resume
		if !send(streamItem{caughtUp: next >= end, hwm: end}) {
			return
		}
		var out bool
		if next, out = l.fetch(ctx, s, p, next, send); !out {
			return
		}
	}
}

// gap returns the gap of reading offset next of a log spanning [first, end).
func (l *KafkaLearner) gap(topic string, p int, kind GapKind, next, first, end int64) OffsetGap {
	g := OffsetGap{Topic: topic, Partition: p, Kind: kind, Checkpoint: next, LogStart: first, LogEnd: end,
		Resume: first, At: l.o.Now()}
	if kind == GapBeforeStart {
		g.Skipped = first - next
	}
	return g
}

// fetch sends s the messages from offset next on, until ctx is done or a
// reading error (sent on s.ch), and returns false then; it returns the
// next offset to read and true when that offset is out of the log's range.
func (l *KafkaLearner) fetch(ctx context.Context, s *topicStream, p int, next int64, send func(streamItem) bool) (int64, bool) {
	// OffsetOutOfRangeError: without it kafka-go's Reader retries an
	// offset past the end forever, and says nothing.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: l.o.Brokers, Topic: s.topic, Partition: p, Dialer: l.o.Dialer,
		MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond, QueueCapacity: 4096, OffsetOutOfRangeError: true})
	defer r.Close()
	if err := r.SetOffset(next); err != nil {
		send(streamItem{err: err})
		return next, false
	}
	for {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := r.FetchMessage(fctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return next, false
		case errors.Is(err, kafka.OffsetOutOfRange):
			return next, true
		case errors.Is(err, context.DeadlineExceeded):
			// Nothing for a while: ask where the partition is. A log
			// that moved past next while idle is a gap, though the
			// Reader may not have noticed yet.
			first, end, err := l.offsets(ctx, s.topic, p)
			if err != nil {
				l.o.Logger.Warn("learner: listing offsets", "topic", s.topic, "partition", p, "err", err)
				continue
			}
			if _, kind := resumeOffset(next, first, end); kind != "" {
				return next, true
			}
			if !send(streamItem{caughtUp: next >= end, hwm: end}) {
				return next, false
			}
		case err != nil:
			l.kafkaFailed(err)
			send(streamItem{err: fmt.Errorf("reading %s/%d: %w", s.topic, p, err)})
			return next, false
		default:
			l.kafkaOK()
			if m.Offset > next {
				// The Reader skips to the log's start by itself when
				// retention passed it: tell that from a hole in the
				// offsets (compaction, transaction markers).
				if first, end, err := l.offsets(ctx, s.topic, p); err == nil && first > next {
					g := l.gap(s.topic, p, GapBeforeStart, next, first, end)
					if !send(streamItem{gap: &g}) {
						return next, false
					}
				}
			}
			next = m.Offset + 1
			if !send(streamItem{msg: m, has: true, caughtUp: next >= m.HighWaterMark, hwm: m.HighWaterMark}) {
				return next, false
			}
		}
	}
}

// offsets returns the first and the next offset of a topic's partition.
func (l *KafkaLearner) offsets(ctx context.Context, topic string, p int) (first, end int64, err error) {
	defer func() {
		if err != nil {
			l.kafkaFailed(err)
		} else {
			l.kafkaOK()
		}
	}()
	resp, err := l.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p)}}})
	if err != nil {
		return 0, 0, fmt.Errorf("listing offsets of %s/%d: %w", topic, p, err)
	}
	for _, po := range resp.Topics[topic] {
		if po.Partition == p {
			if po.Error != nil {
				return 0, 0, fmt.Errorf("listing offsets of %s/%d: %w", topic, p, po.Error)
			}
			return po.FirstOffset, po.LastOffset, nil
		}
	}
	return 0, 0, fmt.Errorf("listing offsets of %s/%d: no answer", topic, p)
}

// consume merges the two streams by timestamp and applies them until ctx
// is done, checkpointing every CheckpointEvery.
func (r *partitionRun) consume(ctx context.Context) error {
	tick := time.NewTicker(r.l.o.CheckpointEvery)
	defer tick.Stop()
	dec, lab := r.streams[0], r.streams[1]
	// wait blocks until s (or, with s nil, either stream) has news.
	wait := func(s *topicStream) error {
		var c0, c1 <-chan streamItem
		if s == nil || s == dec {
			c0 = dec.ch
		}
		if s == nil || s == lab {
			c1 = lab.ch
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			// Only losing the partition stops it; Redis or Kafka being
			// down delays the checkpoint to the next tick.
			err := r.checkpoint(ctx, false)
			if err != nil && !errors.Is(err, ErrFenced) {
				r.l.o.Logger.Warn("learner: checkpoint delayed", "partition", r.p, "err", err)
				return nil
			}
			return err
		case it := <-c0:
			return r.take(dec, it)
		case it := <-c1:
			return r.take(lab, it)
		}
	}
	for {
		// Every stream needs a head, unless it is caught up.
		for _, s := range r.streams {
			for s.head == nil {
				if s.caughtUp {
					select {
					case it := <-s.ch:
						if err := r.take(s, it); err != nil {
							return err
						}
						continue
					default:
					}
					break
				}
				if err := wait(s); err != nil {
					return err
				}
			}
		}
		var s *topicStream
		switch {
		case dec.head != nil && lab.head != nil:
			s = dec
			if lab.head.Time.Before(dec.head.Time) {
				s = lab
			}
		case dec.head != nil:
			s = dec
		case lab.head != nil:
			s = lab
		default:
			if err := wait(nil); err != nil {
				return err
			}
			continue
		}
		m := s.head
		s.head = nil
		r.apply(s, m)
	}
}

// apply applies one message, or queues it for the DLQ.
func (r *partitionRun) apply(s *topicStream, m *kafka.Message) {
	r.syncVariants()
	var err error
	if s == r.streams[0] {
		var rec Record
		if rec, err = ParseRecord(m.Value); err == nil {
			err = r.part.Record(rec)
		}
	} else {
		var lb Label
		if lb, err = ParseLabel(m.Value); err == nil && r.l.partitions > 0 {
			if want := KeyPartition(lb.Key, r.l.partitions); want != m.Partition {
				err = fmt.Errorf("%w: key %q belongs to partition %d, read from %d (produce with the murmur2 partitioner, keyed by the API key)",
					ErrWrongPartition, lb.Key, want, m.Partition)
			}
		}
		if err == nil {
			err = r.part.Label(lb, m.Time)
			if err == nil && r.l.o.LabelLag != nil {
				r.l.o.LabelLag(r.l.o.Now().Sub(m.Time))
			}
		}
	}
	if err != nil {
		r.dlq = append(r.dlq, kafka.Message{Key: m.Key, Value: m.Value, Headers: []kafka.Header{
			{Key: "reason", Value: []byte(err.Error())},
			{Key: "code", Value: []byte(ErrorCode(err))},
			{Key: "topic", Value: []byte(m.Topic)},
			{Key: "partition", Value: []byte(strconv.Itoa(m.Partition))},
			{Key: "offset", Value: []byte(strconv.FormatInt(m.Offset, 10))},
		}})
	}
	r.part.Offsets[s.topic] = m.Offset + 1
	r.dirty = true
	r.l.applied.Add(1)
	if r.l.pace > 0 && m.Offset%10 == 0 {
		time.Sleep(r.l.pace)
	}
}

// checkpoint flushes the DLQ, stores the state with its offsets, publishes
// the model part and commits the offsets — in that order, so that no
// offset is committed that a stored checkpoint does not include. With
// nothing new since the last one it only republishes the model part (a
// heartbeat serving uses to tell a live learner from a dead one).
func (r *partitionRun) checkpoint(ctx context.Context, final bool) error {
	l := r.l
	defer r.status()
	r.syncVariants()
	now := l.o.Now()
	if len(r.dlq) > 0 {
		if err := l.dlq.WriteMessages(ctx, r.dlq...); err != nil {
			l.kafkaFailed(err)
			l.ckptFailures.Add(1)
			return fmt.Errorf("writing %d messages to the DLQ: %w", len(r.dlq), err)
		}
		l.dlqCount.Add(int64(len(r.dlq)))
		r.dlq = r.dlq[:0]
	}
	if r.dirty {
		data, err := r.part.Checkpoint(now)
		if err != nil {
			l.ckptFailures.Add(1)
			return err
		}
		if err := l.o.Store.SaveCheckpoint(ctx, r.p, r.owner, data); err != nil {
			if errors.Is(err, ErrFenced) {
				l.fenced.Add(1)
			}
			l.ckptFailures.Add(1)
			return fmt.Errorf("storing partition %d's checkpoint: %w", r.p, err)
		}
		r.dirty, r.lastCkpt = false, now
	}
	part, err := r.part.Part(r.p, now)
	if err == nil {
		var data []byte
		if data, err = part.MarshalBinary(); err == nil {
			err = l.o.Store.PublishPart(ctx, part, r.owner, data)
			if err == nil {
				l.published.Add(1)
				// The compacted topic is a second copy, for instances
				// without Redis; a failure there is logged, not fatal.
				if kerr := l.models.WriteMessages(ctx, kafka.Message{Key: []byte("part-" + strconv.Itoa(r.p)), Value: data}); kerr != nil {
					l.o.Logger.Warn("learner: publishing to the models topic", "partition", r.p, "err", kerr)
				}
			}
		}
	}
	if err != nil {
		l.publishFailures.Add(1)
		if errors.Is(err, ErrFenced) {
			l.fenced.Add(1)
			return err
		}
		l.o.Logger.Warn("learner: publishing the model part", "partition", r.p, "err", err)
	}
	if final {
		return nil // the generation is over: its commits would be refused
	}
	commit := map[string]map[int]int64{}
	for topic, off := range r.part.Offsets {
		commit[topic] = map[int]int64{r.p: off}
	}
	if len(commit) > 0 {
		if err := r.gen.CommitOffsets(commit); err != nil {
			l.commitFailures.Add(1)
		}
	}
	return nil
}

func (r *partitionRun) status() {
	st := PartitionStatus{Partition: r.p, Stats: r.part.Stats(), Next: map[string]int64{}, HighWatermark: map[string]int64{},
		Checkpointed: r.lastCkpt, Watermark: r.part.Watermark()}
	for topic, off := range r.part.Offsets {
		st.Next[topic] = off
	}
	for _, s := range r.streams {
		if s != nil {
			st.HighWatermark[s.topic] = s.hwm
		}
	}
	r.l.mu.Lock()
	r.l.parts[r.p] = st
	r.l.mu.Unlock()
}
