package serving

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/internal/testredis"
	"github.com/devflow/flowguard/rewards"
)

// The learner's /readyz: ready while it owns partitions, with kafka
// degraded while the broker is unreachable and offsets degraded for
// gapDegraded after an offset gap.
func TestLearnerReadiness(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	owns := []rewards.PartitionStatus{{Partition: 0}, {Partition: 1}}
	gap := func(ago time.Duration) []rewards.GapCount {
		return []rewards.GapCount{{Topic: "flowguard.labels", Partition: 1, Kind: rewards.GapPastEnd, Gaps: 1,
			Last: rewards.OffsetGap{Topic: "flowguard.labels", Partition: 1, Kind: rewards.GapPastEnd, Checkpoint: 43,
				LogStart: 0, LogEnd: 17, At: now.Add(-ago)}}}
	}
	for name, c := range map[string]struct {
		st                     rewards.LearnerStats
		code                   int
		partitions, k, offsets string
		detail                 string
	}{
		"running": {st: rewards.LearnerStats{Partitions: owns}, code: 200, partitions: "ok", k: "ok", offsets: "ok"},
		"no partitions": {st: rewards.LearnerStats{}, code: 503,
			partitions: "down", k: "ok", offsets: "ok"},
		"broker unreachable": {st: rewards.LearnerStats{KafkaError: "dial tcp 127.0.0.1:9092: connection refused", KafkaErrorSince: now.Add(-time.Minute)},
			code: 503, partitions: "down", k: "degraded", offsets: "ok", detail: "connection refused"},
		"a gap a minute ago": {st: rewards.LearnerStats{Partitions: owns, Gaps: gap(time.Minute)}, code: 200,
			partitions: "ok", k: "ok", offsets: "degraded", detail: "offset 43 past the log [0, 17); resumed at 0"},
		"a gap long ago": {st: rewards.LearnerStats{Partitions: owns, Gaps: gap(gapDegraded)}, code: 200,
			partitions: "ok", k: "ok", offsets: "ok"},
	} {
		t.Run(name, func(t *testing.T) {
			code, body := learnerReadiness(c.st, now)
			var r struct {
				Status     string                     `json:"status"`
				Components map[string]componentStatus `json:"components"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			cs := r.Components
			if code != c.code || cs["partitions"].Status != c.partitions || cs["kafka"].Status != c.k || cs["offsets"].Status != c.offsets {
				t.Errorf("%d %s, want %d with partitions %s, kafka %s, offsets %s", code, body, c.code, c.partitions, c.k, c.offsets)
			}
			if !strings.Contains(string(body), c.detail) {
				t.Errorf("%s does not say %q", body, c.detail)
			}
		})
	}
}

// Issue 20, item 2: the broker (kfake, as `flowguard dev kafka`) is killed
// and a fresh one started on the same address, so the learner's
// checkpointed offsets are past the new log's end. The labels serve
// answers 202 to meanwhile are applied, once each; the gap is counted,
// logged at ERROR, and /readyz shows it, and Kafka degraded while the
// broker was down.
func TestLearnerResumesAfterBrokerRestartGap(t *testing.T) {
	rs := testredis.Start(t)
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	addr := kc.Addrs()[0]
	t.Cleanup(func() { kc.Close() })
	yaml := remotePolicies(addr, rs.Addr())
	cfg := mustParse(t, yaml)
	logs := &lockedBuffer{}
	l := runLearner(t, cfg, LearnerOptions{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ts := startML(t, yaml, Options{Seed: 7}, nil)

	// Labels posted to serve, as a fraud system does; resent while
	// serve answers 503 (Kafka not taking them yet).
	to := time.Now().UTC()
	from := to.Add(-time.Hour)
	label := func(id, key string) string {
		return fmt.Sprintf(`{"label_id":%q,"key":%q,"abusive":true,"from":%q,"to":%q}`, id, key, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	send := func(labels []string) {
		t.Helper()
		body := "[" + strings.Join(labels, ",") + "]"
		waitUntil(t, 30*time.Second, "serve to accept the labels", func() bool {
			resp, b := post(t, ts.URL+"/v1/labels", body)
			if resp.StatusCode != 202 && resp.StatusCode != 503 {
				t.Fatalf("labels: %d %s", resp.StatusCode, b)
			}
			return resp.StatusCode == 202
		})
	}
	perPartition := func(keys []string) [4]int64 {
		var n [4]int64
		for _, k := range keys {
			n[rewards.KeyPartition(k, 4)]++
		}
		return n
	}
	applied := func() (labels, dups int64) {
		for _, p := range l.kl.Stats().Partitions {
			labels += p.Labels
			dups += p.Duplicates
		}
		return labels, dups
	}

	// Before: 200 labels, checkpointed with their offsets.
	var before, beforeKeys []string
	for i := range 200 {
		k := fmt.Sprintf("k_gap_%d", i)
		before, beforeKeys = append(before, label(fmt.Sprintf("before-%d", i), k)), append(beforeKeys, k)
	}
	send(before)
	ckpt := perPartition(beforeKeys)
	store := rewards.NewRedisStore(rs.Client(), cfg.Redis.Prefix)
	waitUntil(t, 60*time.Second, "the 200 labels' offsets in the checkpoints", func() bool {
		for p := range 4 {
			data, err := store.LoadCheckpoint(context.Background(), p)
			if err != nil || data == nil {
				return false
			}
			part, err := rewards.RestorePartition(cfg.LearnerConfig(), data)
			if err != nil {
				t.Fatal(err)
			}
			if part.Offsets["flowguard.labels"] != ckpt[p] {
				return false
			}
		}
		n, _ := applied()
		return n == 200
	})
	ready := func() (int, map[string]componentStatus) {
		resp, b := get(t, "http://"+l.Addr()+"/readyz")
		var r struct {
			Components map[string]componentStatus `json:"components"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("readyz %s: %v", b, err)
		}
		return resp.StatusCode, r.Components
	}
	if code, c := ready(); code != 200 || c["kafka"].Status != "ok" || c["offsets"].Status != "ok" {
		t.Fatalf("readyz before the restart: %d %+v", code, c)
	}

	// The broker dies with its log: Kafka is degraded on /readyz.
	kc.Close()
	waitUntil(t, 30*time.Second, "readyz to show kafka degraded", func() bool {
		_, c := ready()
		return c["kafka"].Status == "degraded"
	})
	waitUntil(t, 10*time.Second, "a fresh broker on "+addr, func() bool {
		fresh, err := devkafka.Start(addr, devkafka.DefaultTopics())
		if err == nil {
			kc = fresh // closed by the cleanup
		}
		return err == nil
	})

	// During the gap: 90 new labels and 10 resent, fewer on each partition
	// than its checkpoint's offset, so that every offset is past the end.
	var during, duringKeys []string
	for i := range 90 {
		k := fmt.Sprintf("k_gap_during_%d", i)
		during, duringKeys = append(during, label(fmt.Sprintf("during-%d", i), k)), append(duringKeys, k)
	}
	for i := range 10 {
		during, duringKeys = append(during, before[i]), append(duringKeys, beforeKeys[i])
	}
	for p, n := range perPartition(duringKeys) {
		if n >= ckpt[p] {
			t.Fatalf("partition %d gets %d labels during the gap, not fewer than its checkpoint's %d: the test proves nothing", p, n, ckpt[p])
		}
	}
	send(during)
	waitUntil(t, 60*time.Second, "the 90 new labels applied and the 10 resent counted duplicate", func() bool {
		n, d := applied()
		return n >= 290 && d >= 10
	})
	// Once each, however many checkpoints pass.
	for range 3 {
		time.Sleep(cfg.ML.PublishEvery)
		if n, d := applied(); n != 290 || d != 10 {
			t.Fatalf("%d labels applied and %d duplicates, want 290 and 10", n, d)
		}
	}

	// Counted: every partition's labels topic had a gap past the end.
	metrics := scrape(t, "http://"+l.Addr())
	for p := range 4 {
		series := fmt.Sprintf(`flowguard_learner_offset_gaps_total{kind="past_end",partition="%d",topic="flowguard.labels"} `, p)
		if !strings.Contains(metrics, series) || strings.Contains(metrics, series+"0\n") {
			t.Errorf("no gap counted on partition %d: want %s≥ 1 in\n%s", p, series, grepLines(metrics, "offset_gap"))
		}
		skipped := fmt.Sprintf(`flowguard_learner_offset_gap_messages_total{partition="%d",topic="flowguard.labels"} 0`, p)
		if !strings.Contains(metrics, skipped) {
			t.Errorf("a gap past the end skips nothing: want %s in\n%s", skipped, grepLines(metrics, "offset_gap"))
		}
	}
	// Logged at ERROR with what an operator needs.
	logged := map[int]bool{}
	for _, line := range strings.Split(logs.String(), "\n") {
		var e struct {
			Level, Msg, Topic, Kind, Policy string
			Partition                       int
			Checkpoint                      int64 `json:"checkpoint_offset"`
			Start                           int64 `json:"log_start"`
			End                             int64 `json:"log_end"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || !strings.Contains(e.Msg, "offset gap") || e.Topic != "flowguard.labels" {
			continue
		}
		if e.Level != "ERROR" || e.Kind != "past_end" || e.Checkpoint != ckpt[e.Partition] || e.Start != 0 || e.End >= e.Checkpoint ||
			!strings.Contains(e.Policy, "resume from the log start") {
			t.Errorf("gap log line %s", line)
		}
		logged[e.Partition] = true
	}
	if len(logged) != 4 {
		t.Errorf("gaps logged for partitions %v of the labels topic, want all 4; log:\n%s", logged, grepLines(logs.String(), "gap"))
	}
	// /readyz: ready, Kafka reachable again, the gap shown.
	code, c := ready()
	if code != 200 || c["kafka"].Status != "ok" || c["offsets"].Status != "degraded" || !strings.Contains(c["offsets"].Detail, "past the log") {
		t.Errorf("readyz after the gap: %d %+v, want ready, kafka ok and offsets degraded", code, c)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
