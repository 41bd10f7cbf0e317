package serving

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
)

func postLabel(t *testing.T, ts *testServer, id, key string, abusive bool, severity float64) {
	t.Helper()
	body := fmt.Sprintf(`{"label_id":%q,"key":%q,"abusive":%v,"severity":%v,"source":"investigation","from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`,
		id, key, abusive, severity)
	if resp, b := post(t, ts.URL+"/v1/labels", body); resp.StatusCode != 202 {
		t.Fatalf("label %s: %d %s", id, resp.StatusCode, b)
	}
}

// Over sockets: an abusive label moves its key to the floor on its next
// decision, whatever the bandit prefers; a severe one blocks a key of an
// auto_block tier; abusive: false restores it. Each change is audited.
func TestLabelsActOnKeys(t *testing.T) {
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	ts := startML(t, mlPolicies, Options{}, func(c *config.Loaded) { c.Audit.File = audit })
	// The bandit prefers ×2, the free tier's ceiling.
	if err := ts.pipe.InstallBandit(biasedModel(t, ts.pipe, 2, ts.pipe.Now())); err != nil {
		t.Fatal(err)
	}
	if d := decideAs(t, ts, "k_lab", ""); d.Multiplier != 2 || d.Limit != 200 {
		t.Fatalf("before any label: %+v, want the bandit's ×2", d)
	}
	postLabel(t, ts, "l1", "k_lab", true, 0.5)
	if d := decideAs(t, ts, "k_lab", ""); d.Decision != pipeline.ActionAllow || d.Multiplier != 0.5 || d.Limit != 50 || d.Reason != pipeline.ReasonLabel {
		t.Fatalf("after an abusive label of severity 0.5: %+v, want the floor ×0.5 (limit 50), reason label", d)
	}
	postLabel(t, ts, "l2", "k_lab", true, 1)
	if d := decideAs(t, ts, "k_lab", ""); d.Decision != pipeline.ActionBlock || d.Reason != pipeline.ReasonLabel {
		t.Fatalf("after a severe label on an auto_block tier: %+v, want a block, reason label", d)
	}
	// An enterprise key is held at its floor, not blocked: its tier does not auto_block.
	postLabel(t, ts, "l3", "k_ent", true, 1)
	if d := decideAs(t, ts, "k_ent", "acme"); d.Decision != pipeline.ActionAllow || d.Multiplier != 1 || d.Reason != pipeline.ReasonLabel {
		t.Fatalf("enterprise key after a severe label: %+v, want its floor ×1", d)
	}
	postLabel(t, ts, "l4", "k_lab", false, 0)
	if d := decideAs(t, ts, "k_lab", ""); d.Decision != pipeline.ActionAllow || d.Reason == pipeline.ReasonLabel || d.Multiplier != 2 {
		t.Fatalf("after abusive: false: %+v, want the bandit's ×2 again", d)
	}
	if got := metricValue(t, ts, `flowguard_label_actions_total{action="hold"}`); got != 3 {
		t.Errorf("holds %v, want 3 (the second label raised the severity)", got)
	}
	if got := metricValue(t, ts, `flowguard_label_actions_total{action="release"}`); got != 1 {
		t.Errorf("releases %v, want 1", got)
	}
	ts.stop(t)
	ts.Server.Close()
	b, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"decision":"label_hold"`, `"decision":"label_release"`, `"reason":"investigation l4"`, `"key":"k_lab"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the audit log lacks %s:\n%s", want, b)
		}
	}
}

// The label state is a feature (schema v2): over sockets, an abusive label
// sets the key's label_state to 1 and a key seen from its address gets
// ip_suspicion; abusive: false sets label_state to -1. Explain shows both.
func TestLabelStateIsAFeature(t *testing.T) {
	ts := startML(t, mlPolicies, Options{}, nil)
	decideAs(t, ts, "k_state", "") // from 198.51.100.7
	postLabel(t, ts, "s1", "k_state", true, 1)
	if f := explainFeatures(t, ts, "k_state"); f["label_state"] < 0.99 {
		t.Errorf("after an abusive label: label_state %v, want 1", f["label_state"])
	}
	decideAs(t, ts, "k_neighbour", "") // the same address
	if f := explainFeatures(t, ts, "k_neighbour"); f["ip_suspicion"] < 0.49 || f["label_state"] != 0 {
		t.Errorf("a key on the labelled key's address: ip_suspicion %v label_state %v, want 0.5 and 0", f["ip_suspicion"], f["label_state"])
	}
	postLabel(t, ts, "s2", "k_state", false, 0)
	if f := explainFeatures(t, ts, "k_state"); f["label_state"] > -0.99 {
		t.Errorf("after abusive: false: label_state %v, want -1", f["label_state"])
	}
}
