package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/rewards"
	"github.com/segmentio/kafka-go"
)

// reportLog writes a small decision log under the embedded experiments
// file: keys assigned by the Assigner, the bandit variant's epochs with a
// uniform logging policy over the six arms.
func reportLog(t *testing.T, keys int) []rewards.Record {
	t.Helper()
	cfg, err := experiments.Default()
	if err != nil {
		t.Fatal(err)
	}
	a, err := experiments.NewAssigner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	arms := bandit.DefaultArms()
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var recs []rewards.Record
	for i := range keys {
		key := fmt.Sprintf("k_rep_%d", i)
		as, ok := a.Primary(experiments.Unit{Key: key, Tier: "free"})
		if !ok {
			continue
		}
		id := fmt.Sprintf("d%d", i)
		d := rewards.Record{Type: rewards.TypeDecision, ID: id, Key: key, Tier: "free", At: t0,
			Experiment: "bandit-vs-static", Variant: as.Variant, Context: []float64{float64(i%7) / 7, 1}, Floor: 0.5, Ceiling: 2, Base: 60}
		m := 1.0
		if as.Policy == experiments.PolicyBandit {
			arm := 1 + i%4 // x0.5 … x2: the arms [0.5, 2] allows
			m = arms[arm].Multiplier
			d.Policy, d.Arm, d.ArmName, d.Multiplier, d.Propensity = rewards.PolicyBandit, arm, arms[arm].Name, m, 0.25
		} else {
			d.Policy, d.Arm, d.ArmName, d.Multiplier, d.Propensity = rewards.PolicyStatic, 2, "x1", 1, 1
		}
		demand := int64(40 + i%50)
		served := min(demand, int64(60*m))
		recs = append(recs, d, rewards.Record{Type: rewards.TypeOutcome, ID: id, Key: key, At: t0.Add(time.Minute),
			Served: served, Throttled: demand - served})
	}
	return recs
}

func TestExperimentsReportFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	var buf bytes.Buffer
	for _, r := range reportLog(t, 600) {
		b, _ := json.Marshal(r)
		buf.Write(append(b, '\n'))
	}
	os.WriteFile(path, buf.Bytes(), 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(buf.String()+"{\"type\":\"decision\"}\n"), 0o644)

	var out, errOut bytes.Buffer
	if code := run([]string{"experiments", "report", "--file", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"experiment bandit-vs-static (control: control)", "lints-shadow", "SRM: units", "static x0.5", "greedy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"experiments", "report", "--json", "--file", path}, &out, &errOut); code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut.String())
	}
	var rep experiments.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Experiments) != 1 || rep.Epochs == 0 {
		t.Fatalf("--json: %v %+v", err, rep)
	}
	cases := map[string]struct {
		args []string
		code int
		msg  string
	}{
		"bad line":     {[]string{"experiments", "report", "--file", bad}, 1, "bad.jsonl:" + fmt.Sprint(strings.Count(buf.String(), "\n")+1) + ": bad decision record: id must be 1 to 128 bytes"},
		"missing file": {[]string{"experiments", "report", "--file", filepath.Join(dir, "nope")}, 1, "nope: cannot read: no such file or directory"},
		"no source":    {[]string{"experiments", "report"}, 2, "give exactly one of --file or --brokers"},
		"two sources":  {[]string{"experiments", "report", "--file", path, "--brokers", "x:1"}, 2, "give exactly one of --file or --brokers"},
		"bad labels":   {[]string{"experiments", "report", "--file", path, "--labels", path}, 1, "decisions.jsonl:1: bad label"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(c.args, &out, &errOut); code != c.code || !strings.Contains(errOut.String(), c.msg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut.String(), c.code, c.msg)
			}
		})
	}
}

// TestExperimentsReportKafka reads the log from a Kafka-protocol broker
// (kfake, in process) and gives the same report as from the file.
func TestExperimentsReportKafka(t *testing.T) {
	c, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recs := reportLog(t, 300)
	w := &kafka.Writer{Addr: kafka.TCP(c.Addrs()...), Topic: "flowguard.decisions", Balancer: &kafka.Hash{}, BatchTimeout: 10 * time.Millisecond}
	msgs := make([]kafka.Message, len(recs))
	var file bytes.Buffer
	for i, r := range recs {
		b, _ := json.Marshal(r)
		msgs[i] = kafka.Message{Key: []byte(r.Key), Value: b}
		file.Write(append(b, '\n'))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	path := filepath.Join(t.TempDir(), "log.jsonl")
	os.WriteFile(path, file.Bytes(), 0o644)

	var fromKafka, fromFile, errOut bytes.Buffer
	if code := run([]string{"experiments", "report", "--json", "--brokers", strings.Join(c.Addrs(), ","), "--topic", "flowguard.decisions"}, &fromKafka, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if code := run([]string{"experiments", "report", "--json", "--file", path}, &fromFile, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var k, f experiments.Report
	json.Unmarshal(fromKafka.Bytes(), &k)
	json.Unmarshal(fromFile.Bytes(), &f)
	if k.Decisions != int64(len(recs)/2) || k.Epochs != f.Epochs || k.Experiments[0].SRM.P == nil || f.Experiments[0].SRM.P == nil || *k.Experiments[0].SRM.P != *f.Experiments[0].SRM.P {
		t.Errorf("kafka report %d decisions, %d epochs; file %d epochs", k.Decisions, k.Epochs, f.Epochs)
	}
	if code := run([]string{"experiments", "report", "--brokers", strings.Join(c.Addrs(), ","), "--topic", "nope", "--timeout", "5s"}, &fromKafka, &errOut); code != 1 {
		t.Errorf("unknown topic: exit %d", code)
	}
}
