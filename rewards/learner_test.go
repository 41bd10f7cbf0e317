package rewards

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/testredis"
	"github.com/devflow/flowguard/internal/teststack"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// The learner process of the restart test: the test binary runs itself
// with FG_LEARNER_CHILD set, and the parent kills it with SIGKILL.
func TestLearnerChildProcess(t *testing.T) {
	if os.Getenv("FG_LEARNER_CHILD") == "" {
		return // not a test of its own: the body of the child process
	}
	l := newTestLearner(t, strings.Split(os.Getenv("FG_BROKERS"), ","), os.Getenv("FG_REDIS"),
		os.Getenv("FG_PREFIX"), os.Getenv("FG_GROUP"))
	l.pace = 2 * time.Millisecond // slow enough to be killed mid-stream
	if err := l.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func newTestLearner(t testing.TB, brokers []string, redisAddr, prefix, group string) *KafkaLearner {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rc.Close() })
	l, err := NewKafkaLearner(LearnerOptions{Config: variantConfig(variantA, variantB), Brokers: brokers, Group: group,
		Store: NewRedisStore(rc, prefix), CheckpointEvery: 100 * time.Millisecond, SessionTimeout: 6 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// produceStream writes evs to the decisions and labels topics, keyed by
// API key, stamped with their event time (a label 30 min after its range
// ends), with malformed messages after every 97th event: a truncated
// record, a label of the wrong type, and a decision drawn from a model the
// learner does not train. It returns the number of malformed messages.
func produceStream(t testing.TB, brokers []string, evs []event) int {
	t.Helper()
	w := func(topic string) *kafka.Writer {
		return &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: time.Millisecond}
	}
	dec, lab := w("flowguard.decisions"), w("flowguard.labels")
	defer dec.Close()
	defer lab.Close()
	var decs, labs []kafka.Message
	bad := 0
	for i, ev := range evs {
		if ev.rec != nil {
			v, _ := json.Marshal(ev.rec)
			decs = append(decs, kafka.Message{Key: []byte(ev.rec.Key), Value: v, Time: ev.rec.At})
		} else {
			v, _ := json.Marshal(ev.label)
			labs = append(labs, kafka.Message{Key: []byte(ev.label.Key), Value: v, Time: ev.label.To.Add(30 * time.Minute)})
		}
		if i%97 == 96 {
			bad += 3
			at := evs[i-1].time()
			decs = append(decs, kafka.Message{Key: []byte("k1"), Value: []byte(`{"type":"decision","id":`), Time: at})
			gone, _ := json.Marshal(Record{Type: TypeDecision, ID: "gone-" + strconv.Itoa(i), Key: "k1", At: at, Policy: PolicyBandit,
				Model: "exp/gone@00000000", Arm: 0, Multiplier: 1, Propensity: 1, Context: []float64{1, 1, 1}, Base: 1})
			decs = append(decs, kafka.Message{Key: []byte("k1"), Value: gone, Time: at})
			labs = append(labs, kafka.Message{Key: []byte("k2"), Value: []byte(`{"label_id":"x","key":"k2","abusive":"yes"}`), Time: at})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dec.WriteMessages(ctx, decs...); err != nil {
		t.Fatal(err)
	}
	if err := lab.WriteMessages(ctx, labs...); err != nil {
		t.Fatal(err)
	}
	return bad
}

func (e event) time() time.Time {
	if e.rec != nil {
		return e.rec.At
	}
	return e.label.To.Add(30 * time.Minute)
}

// doneAt returns the partitions' checkpoints once every one of them
// includes its topics up to end.
func waitCheckpoints(t *testing.T, rc redis.UniversalClient, prefix string, end map[string][]int64, limit time.Duration) []*Partition {
	t.Helper()
	store := NewRedisStore(rc, prefix)
	deadline := time.Now().Add(limit)
	for {
		var parts []*Partition
		done := true
		for p := range end["flowguard.decisions"] {
			data, err := store.LoadCheckpoint(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if data == nil {
				done = false
				break
			}
			part, err := RestorePartition(variantConfig(variantA, variantB), data)
			if err != nil {
				t.Fatal(err)
			}
			for topic, ends := range end {
				if part.Offsets[topic] != ends[p] {
					done = false
				}
			}
			parts = append(parts, part)
		}
		if done {
			return parts
		}
		if time.Now().After(deadline) {
			t.Fatalf("the learner did not reach the end of the topics within %v", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func topicEnds(t *testing.T, brokers []string) map[string][]int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	out := map[string][]int64{}
	for _, topic := range []string{"flowguard.decisions", "flowguard.labels"} {
		reqs := make([]kafka.OffsetRequest, 4)
		for p := range reqs {
			reqs[p] = kafka.LastOffsetOf(p)
		}
		resp, err := c.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			t.Fatal(err)
		}
		out[topic] = make([]int64, 4)
		for _, po := range resp.Topics[topic] {
			out[topic][po.Partition] = po.LastOffset
		}
	}
	return out
}

// The exactly-once promise: a learner killed with SIGKILL several times
// mid-stream, and restarted each time, ends with the models (the main one
// and two experiment variants' own), the counters and the label set of a
// learner that ran without interruption, to 1e-9.
// Malformed messages reach the DLQ with their reason, and the stream goes
// on past them.
func TestLearnerKilledAndRestartedEqualsUninterrupted(t *testing.T) {
	testenv.SkipShort(t, "starts Kafka, Redis and learner processes")
	rs, brokers := teststack.Start(t)
	evs := variantStream(11, 40, 100)
	bad := produceStream(t, brokers, evs)
	end := topicEnds(t, brokers)
	rc := rs.Client()

	// The reference: one uninterrupted run.
	ref := newTestLearner(t, brokers, rs.Addr(), "ref:", "ref")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := ref.Run(ctx)
		if err != nil {
			t.Errorf("learner: %v", err)
		}
		done <- err
	}()
	want := waitCheckpoints(t, rc, "ref:", end, 2*time.Minute)
	cancel()
	<-done

	// The same input, with the learner process killed four times.
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLearnerChildProcess$", "-test.v")
		cmd.Env = append(os.Environ(), "FG_LEARNER_CHILD=1", "FG_BROKERS="+strings.Join(brokers, ","),
			"FG_REDIS="+rs.Addr(), "FG_PREFIX=crash:", "FG_GROUP=crash")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	store := NewRedisStore(rc, "crash:")
	var total int64
	for _, ends := range end {
		for _, e := range ends {
			total += e
		}
	}
	for kill := 1; kill <= 4; kill++ {
		cmd := child()
		// Kill it a fifth of the way further each time, somewhere between
		// two checkpoints.
		deadline := time.Now().Add(time.Minute)
		for progress(t, store) < total*int64(kill)/5 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Duration(23*kill) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("kill %d: %d of %d records and labels checkpointed", kill, progress(t, store), total)
	}
	last := child()
	got := waitCheckpoints(t, rc, "crash:", end, 2*time.Minute)
	_ = last.Process.Signal(syscall.SIGKILL)
	_ = last.Wait()

	for p := range want {
		ws, gs := want[p].Stats(), got[p].Stats()
		if ws != gs {
			t.Errorf("partition %d: stats %+v, want %+v", p, gs, ws)
		}
		assertSamePosterior(t, posterior(t, got[p]), posterior(t, want[p]), 1e-9)
		for _, key := range []string{variantA.Key(), variantB.Key()} {
			assertSamePosterior(t, variantPosterior(t, got[p], key), variantPosterior(t, want[p], key), 1e-9)
		}
		gw, gi := got[p].Risk().Weights()
		ww, wi := want[p].Risk().Weights()
		if math.Abs(gi-wi) > 1e-9 {
			t.Errorf("partition %d: risk intercept %v, want %v", p, gi, wi)
		}
		for i := range ww {
			if math.Abs(gw[i]-ww[i]) > 1e-9 {
				t.Errorf("partition %d: risk weight %d = %v, want %v", p, i, gw[i], ww[i])
			}
		}
	}
	var variantUpdates uint64
	for p := range want {
		for _, a := range variantPosterior(t, want[p], variantA.Key()) {
			variantUpdates += a.Count
		}
	}
	if variantUpdates == 0 {
		t.Error("variant A's model learned nothing: its comparison proves nothing")
	}
	var labels, dups int64
	for _, p := range want {
		labels += p.Stats().Labels
		dups += p.Stats().Duplicates
	}
	distinct := map[string]bool{}
	resent := 0
	for _, ev := range evs {
		if ev.label != nil {
			if distinct[ev.label.LabelID] {
				resent++
			}
			distinct[ev.label.LabelID] = true
		}
	}
	if labels != int64(len(distinct)) || dups != int64(resent) {
		t.Errorf("labels applied %d (want %d), duplicates %d (want %d)", labels, len(distinct), dups, resent)
	}

	// Every malformed message is in the DLQ with its reason — repeated,
	// perhaps, by a killed learner, never missing.
	seen := map[string]string{}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "flowguard.labels.dlq", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	for len(seen) < bad {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("DLQ: %d distinct messages of %d: %v", len(seen), bad, err)
		}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		seen[h["topic"]+"/"+h["partition"]+"/"+h["offset"]] = h["reason"]
	}
	for where, reason := range seen {
		if !strings.Contains(reason, "bad") && !strings.Contains(reason, "invalid") {
			t.Errorf("DLQ message %s: reason %q does not say what is wrong", where, reason)
		}
	}
}

// progress sums the offsets the crash learner's checkpoints include.
func progress(t *testing.T, store *RedisStore) int64 {
	t.Helper()
	var n int64
	for p := range 4 {
		data, err := store.LoadCheckpoint(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if data == nil {
			continue
		}
		part, err := RestorePartition(testConfig(), data)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range part.Offsets {
			n += off
		}
	}
	return n
}

// A member that lost its partition cannot overwrite its successor's
// checkpoint or model.
func TestRedisStoreFencesZombies(t *testing.T) {
	rs := testredis.Start(t)
	s := NewRedisStore(rs.Client(), "t:")
	ctx := context.Background()
	if err := s.Claim(ctx, 2, "old/1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(ctx, 2, "old/1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(ctx, 2, "new/2"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(ctx, 2, "old/1", []byte("b")); !errors.Is(err, ErrFenced) {
		t.Fatalf("zombie save: %v, want ErrFenced", err)
	}
	p, err := NewPartition(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	part, err := p.Part(2, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PublishPart(ctx, part, "old/1", []byte("m")); !errors.Is(err, ErrFenced) {
		t.Fatalf("zombie publish: %v, want ErrFenced", err)
	}
	if err := s.PublishPart(ctx, part, "new/2", []byte("m")); err != nil {
		t.Fatal(err)
	}
	data, _ := s.LoadCheckpoint(ctx, 2)
	stamps, _ := s.Stamps(ctx)
	parts, _ := s.Parts(ctx, []int{1, 2})
	if string(data) != "a" || stamps[2] != strconv.FormatInt(t0.UnixMicro(), 10)+":"+strconv.FormatUint(part.Bandit.Version(), 10) || string(parts[2]) != "m" || len(parts) != 1 {
		t.Errorf("checkpoint %q, stamps %v, parts %v", data, stamps, parts)
	}
}

// A learner started before a variant existed refuses that variant's
// records to the DLQ; once SetVariants gives it the variant's model (its
// experiments file reloaded), it trains and publishes that model, in the
// parts serving merges.
func TestLearnerPicksUpNewVariantModels(t *testing.T) {
	rs, brokers := teststack.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rc.Close()
	store := NewRedisStore(rc, "pick:")
	l, err := NewKafkaLearner(LearnerOptions{Config: variantConfig(variantA), Brokers: brokers, Group: "pick",
		Store: store, CheckpointEvery: 100 * time.Millisecond, SessionTimeout: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// variantB's wait-mode epochs learn only when final: the second batch
	// ends far past the window.
	onlyB := func(seed uint64, shift time.Duration) []event {
		var out []event
		for _, ev := range variantStream(seed, 6, 6) {
			if ev.rec != nil {
				var k int
				fmt.Sscanf(ev.rec.Key, "k%d", &k)
				if k%3 != 2 {
					continue
				}
				c := *ev.rec
				c.At = c.At.Add(shift)
				c.ID += "-" + strconv.FormatUint(seed, 10)
				ev = event{rec: &c}
			} else {
				continue
			}
			out = append(out, ev)
		}
		return out
	}
	first := onlyB(1, 0)
	produceRecords(t, brokers, first)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	decisions := 0
	for _, ev := range first {
		if ev.rec.Type == TypeDecision {
			decisions++
		}
	}
	waitFor("variant B's decisions in the DLQ", func() bool { return l.Stats().DLQ >= int64(decisions) })

	if err := l.SetVariants([]VariantModel{variantA, variantB}); err != nil {
		t.Fatal(err)
	}
	produceRecords(t, brokers, onlyB(2, 0))
	produceRecords(t, brokers, onlyB(3, 30*24*time.Hour)) // moves the clock past the window
	waitFor("variant B's model in every published part, learned", func() bool {
		stamps, err := store.Stamps(context.Background())
		if err != nil || len(stamps) != 4 {
			return false
		}
		raw, err := store.Parts(context.Background(), []int{0, 1, 2, 3})
		if err != nil {
			return false
		}
		var parts []ModelPart
		for _, data := range raw {
			part, err := DecodeModelPart(data)
			if err != nil {
				t.Fatal(err)
			}
			if part.Variants[variantB.Key()] == nil {
				return false
			}
			parts = append(parts, part)
		}
		m, err := Combine(time.Now(), parts)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for a := range m.Variants[variantB.Key()].NumArms() {
			post, _ := m.Variants[variantB.Key()].ArmPosterior(a)
			n += post.Count
		}
		return n > 0
	})
	if got := l.Stats().DLQ; got != int64(decisions) {
		t.Errorf("DLQ %d, want the %d decisions sent before the reload", got, decisions)
	}
}

// produceRecords writes the records of evs to the decisions topic, keyed
// by API key and stamped with their event time.
func produceRecords(t testing.TB, brokers []string, evs []event) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "flowguard.decisions", Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	var msgs []kafka.Message
	for _, ev := range evs {
		v, _ := json.Marshal(ev.rec)
		msgs = append(msgs, kafka.Message{Key: []byte(ev.rec.Key), Value: v, Time: ev.rec.At})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// fixedPartition puts every message on one partition, as kcat does with
// its default partitioner for keys murmur2 maps elsewhere.
type fixedPartition int

func (p fixedPartition) Balance(_ kafka.Message, _ ...int) int { return int(p) }

// A label produced to a partition that does not own its key (kcat's
// default partitioner) goes to the DLQ with code wrong_partition and is
// never counted applied: its key's decisions live on another partition.
func TestWrongPartitionLabelGoesToTheDLQ(t *testing.T) {
	rs, brokers := teststack.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rc.Close()
	l, err := NewKafkaLearner(LearnerOptions{Config: variantConfig(), Brokers: brokers, Group: "wrongpart",
		Store: NewRedisStore(rc, "wp:"), CheckpointEvery: 100 * time.Millisecond, SessionTimeout: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	key := "k_wrong_partition"
	right := KeyPartition(key, 4)
	wrong := (right + 1) % 4
	label := func(id string, p int) {
		t.Helper()
		w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "flowguard.labels", Balancer: fixedPartition(p),
			RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
		defer w.Close()
		v := fmt.Sprintf(`{"label_id":%q,"key":%q,"abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, id, key)
		wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
		defer wcancel()
		if err := w.WriteMessages(wctx, kafka.Message{Key: []byte(key), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	label("lw-1", wrong)
	label("lw-2", right)
	labels := func(st LearnerStats) (n int64) {
		for _, p := range st.Partitions {
			n += p.Stats.Labels // held labels (unknown key) count here too
		}
		return n
	}
	// Both counters move at the next checkpoint.
	deadline := time.Now().Add(time.Minute)
	for st := l.Stats(); st.Messages < 2 || st.DLQ < 1 || labels(st) < 1; st = l.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %d messages, DLQ %d, %d labels", st.Messages, st.DLQ, labels(st))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // three more checkpoints: nothing else may move
	if st := l.Stats(); st.DLQ != 1 || labels(st) != 1 {
		t.Errorf("DLQ %d and %d labels applied or held, want the label on the wrong partition in the DLQ and the other applied", st.DLQ, labels(st))
	}
	// The DLQ message says why, with its code.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "flowguard.labels.dlq", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	m, err := r.ReadMessage(rctx)
	if err != nil {
		t.Fatal(err)
	}
	hs := map[string]string{}
	for _, h := range m.Headers {
		hs[h.Key] = string(h.Value)
	}
	if hs["code"] != "wrong_partition" || !strings.Contains(hs["reason"], fmt.Sprintf("belongs to partition %d", right)) {
		t.Errorf("DLQ headers %v, want code wrong_partition and the right partition in the reason", hs)
	}
}
