package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/testredis"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	alertRules     = "../deploy/prometheus/flowguard-alerts.yml"
	alertRuleTests = "../deploy/prometheus/flowguard-alerts_test.yml"
	dashboard      = "../dashboards/flowguard.json"
)

// needPromtool returns promtool's path; without it the test is skipped,
// except under CI=true, where a missing dependency is a failure.
func needPromtool(t *testing.T) string {
	t.Helper()
	return testenv.Need(t, "promtool", "prometheus")
}

// TestAlertRules runs promtool's syntax check and the rules' unit tests,
// which fire every alert at least once.
func TestAlertRules(t *testing.T) {
	bin := needPromtool(t)
	for _, args := range [][]string{{"check", "rules", alertRules}, {"test", "rules", alertRuleTests}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert has a case in the unit tests.
	rules, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(alertRuleTests)
	if err != nil {
		t.Fatal(err)
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllSubmatch(rules, -1)
	if len(alerts) == 0 {
		t.Fatal("no alerts found")
	}
	for _, a := range alerts {
		if !bytes.Contains(tests, []byte("alertname: "+string(a[1])+"\n")) {
			t.Errorf("alert %s has no unit test in %s", a[1], alertRuleTests)
		}
	}
}

// TestDashboardIsValid checks the Grafana JSON: unique panel ids, a query
// in every non-row panel, and no two panels overlapping.
func TestDashboardIsValid(t *testing.T) {
	data, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct{ H, W, X, Y int }
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard has uid %q and %d panels", d.UID, len(d.Panels))
	}
	ids := map[int]string{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type != "row" && (len(p.Targets) == 0 || p.Targets[0].Expr == "") {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q is wider than the grid", p.Title)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if prev, taken := cells[[2]int{x, y}]; taken {
					t.Fatalf("panels %q and %q overlap at %d,%d", prev, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
	}
}

// TestDashboardAndAlertsUseExportedMetrics: every flowguard_* name the
// dashboard and the alert rules query is exported by a running server
// (embedded default; Redis + Kafka + remote learner) or a running learner.
// A metric is exported when it is in a /metrics scrape or described by the
// registry /metrics serves (a labelled family with no series yet is not
// scraped).
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	exported := map[string]bool{}

	// Embedded default: in-process learner, experiments, audit file.
	dir := t.TempDir()
	def, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	def.Audit.File = filepath.Join(dir, "audit.jsonl")
	def.Experiments.StopLog = filepath.Join(dir, "stops.jsonl")
	embedded := startServer(t, def)

	// Scaled out: shared Redis limiter, Kafka decision log, remote learner.
	rs := testredis.Start(t)
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kc.Close() })
	scaled := mustParse(t, fmt.Sprintf(`
kafka: {brokers: [%q], batch_timeout: 10ms}
redis: {addrs: [%q]}
ml: {learner: remote, model_poll: 200ms}
audit: {file: %q}
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100, floor: 0.25, ceiling: 4, ml: on}
`, kc.Addrs()[0], rs.Addr(), filepath.Join(dir, "audit2.jsonl")))
	remote := startServer(t, scaled)

	l, err := NewLearner(scaled, LearnerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, ts := range []*testServer{embedded, remote} {
		post(t, ts.URL+"/v1/decide", `{"key":"k_metrics","tenant":"acme"}`)
		addScraped(exported, scrape(t, ts.URL))
		addDescribed(exported, ts.metrics.reg)
	}
	addDescribed(exported, l.reg)
	families, err := l.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		exported[f.GetName()] = true
	}

	for _, file := range []string{dashboard, alertRules} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for _, name := range referencedMetrics(data) {
			if !exported[name] && !exported[histogramBase(name)] {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			t.Errorf("%s queries metrics nothing exports: %s", file, strings.Join(missing, ", "))
		}
	}
}

var metricName = regexp.MustCompile(`\bflowguard_[a-z0-9_]*[a-z0-9]`)

// referencedMetrics returns the flowguard_* names in data, sorted, once each.
func referencedMetrics(data []byte) []string {
	seen := map[string]bool{}
	for _, m := range metricName.FindAll(data, -1) {
		seen[string(m)] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func histogramBase(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(name, s); ok {
			return b
		}
	}
	return name
}

// addScraped adds the names of a Prometheus text exposition.
func addScraped(into map[string]bool, text string) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			into[strings.Fields(rest)[0]] = true
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			into[line[:i]] = true
		}
	}
}

var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// addDescribed adds every metric family reg describes.
func addDescribed(into map[string]bool, reg *prometheus.Registry) {
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			into[m[1]] = true
		}
	}
}
