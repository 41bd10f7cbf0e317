package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/gonum/stat/distuv"
)

// Outcome metrics, as named in results.json: what the pack reports and
// the targets judge. Lower is better for every one of them.
var OutcomeMetrics = []string{
	"legit_throttled_fraction",
	"legit_key_days_throttled_fraction",
	"enterprise_throttled_fraction",
	"enterprise_key_epochs_below_floor",
	"abuse_served_fraction",
}

// metricOf reads an outcome metric of a policy's result.
func metricOf(p PolicyResult, metric string) float64 {
	switch metric {
	case "legit_throttled_fraction":
		return p.LegitThrottledFraction
	case "legit_key_days_throttled_fraction":
		return p.LegitKeyDaysThrottledFraction
	case "enterprise_throttled_fraction":
		return p.EnterpriseThrottledFraction
	case "enterprise_key_epochs_below_floor":
		return float64(p.EnterpriseKeyEpochsBelowFloor)
	case "abuse_served_fraction":
		return p.AbuseServedFraction
	case "reward":
		return p.Reward
	}
	panic("sim: unknown metric " + metric)
}

// StaticPolicies are the baselines "best static" is the best of.
var StaticPolicies = []string{PolicyStaticP99, PolicyStaticP99Tier, PolicyStaticTier}

// Stat is a metric over seeds: the mean and its 95% interval (Student's t
// over the seeds; the interval is the mean itself with one seed).
type Stat struct {
	Mean   float64   `json:"mean"`
	Lo     float64   `json:"lo"`
	Hi     float64   `json:"hi"`
	Values []float64 `json:"values"`
}

func newStat(v []float64) Stat {
	s := Stat{Values: v}
	if len(v) == 0 {
		return s
	}
	for _, x := range v {
		s.Mean += x
	}
	s.Mean /= float64(len(v))
	s.Lo, s.Hi = s.Mean, s.Mean
	if len(v) > 1 {
		var ss float64
		for _, x := range v {
			ss += (x - s.Mean) * (x - s.Mean)
		}
		se := math.Sqrt(ss / float64(len(v)-1) / float64(len(v)))
		t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(len(v) - 1)}.Quantile(0.975)
		s.Lo, s.Hi = s.Mean-t*se, s.Mean+t*se
	}
	return s
}

// ScenarioSummary is one scenario over seeds.
type ScenarioSummary struct {
	Scenario    string   `json:"scenario"`
	Description string   `json:"description"`
	Seeds       []uint64 `json:"seeds"`
	HasAbuse    bool     `json:"has_abuse"`
	FlashCrowd  bool     `json:"flash_crowd"`
	// Policies maps policy → metric → Stat, over the seeds.
	Policies map[string]map[string]Stat `json:"policies"`
	// Tiers maps policy → tier → metric → Stat.
	Tiers map[string]map[string]map[string]Stat `json:"tiers"`
	Order []string                              `json:"order"`
	// Checks are the targets of issue 17, judged on the means.
	Checks []Check `json:"checks"`
}

// Check is one target judged on one scenario.
type Check struct {
	Target string `json:"target"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Summarize aggregates one scenario's results over seeds.
func Summarize(s *Scenario, runs []*Results) ScenarioSummary {
	sum := ScenarioSummary{Scenario: s.Name, Description: s.Description, HasAbuse: len(s.Abusers) > 0,
		Policies: map[string]map[string]Stat{}, Tiers: map[string]map[string]map[string]Stat{}}
	for _, in := range s.Incidents {
		sum.FlashCrowd = sum.FlashCrowd || in.Kind == FlashCrowd
	}
	if len(runs) == 0 {
		return sum
	}
	sum.Order = runs[0].Order
	for _, r := range runs {
		sum.Seeds = append(sum.Seeds, r.Seed)
	}
	metrics := append(slices.Clone(OutcomeMetrics), "reward")
	for _, name := range sum.Order {
		sum.Policies[name] = map[string]Stat{}
		for _, m := range metrics {
			v := make([]float64, len(runs))
			for i, r := range runs {
				v[i] = metricOf(r.Policies[name], m)
			}
			sum.Policies[name][m] = newStat(v)
		}
		sum.Tiers[name] = map[string]map[string]Stat{}
		for tier := range runs[0].Policies[name].Tiers {
			st := map[string]Stat{}
			for _, m := range []string{"legit_throttled_fraction", "legit_key_days_throttled_fraction", "key_epochs_below_floor", "abuse_served_fraction"} {
				v := make([]float64, len(runs))
				for i, r := range runs {
					tr := r.Policies[name].Tiers[tier]
					v[i] = map[string]float64{"legit_throttled_fraction": tr.LegitThrottledFraction,
						"legit_key_days_throttled_fraction": tr.LegitKeyDaysThrottledFraction,
						"key_epochs_below_floor":            float64(tr.KeyEpochsBelowFloor),
						"abuse_served_fraction":             tr.AbuseServedFraction}[m]
				}
				st[m] = newStat(v)
			}
			sum.Tiers[name][tier] = st
		}
	}
	sum.Checks = sum.targets(PolicyLinTS)
	return sum
}

// best is the best (lowest) mean of metric over the static baselines run,
// and which one it is.
func (s *ScenarioSummary) best(metric string) (float64, string, bool) {
	v, who, ok := math.Inf(1), "", false
	for _, p := range StaticPolicies {
		if st, in := s.Policies[p]; in && st[metric].Mean < v {
			v, who, ok = st[metric].Mean, p, true
		}
	}
	return v, who, ok
}

// targets judges policy against the targets of issue 17 on the means.
func (s *ScenarioSummary) targets(policy string) []Check {
	p, ok := s.Policies[policy]
	if !ok {
		return nil
	}
	var out []Check
	add := func(target string, pass bool, format string, args ...any) {
		out = append(out, Check{Target: target, Pass: pass, Detail: fmt.Sprintf(format, args...)})
	}
	mean := func(m string) float64 { return p[m].Mean }
	if b, who, ok := s.best("legit_throttled_fraction"); ok {
		limit := math.Max(b/5, 0.0005)
		add("legit throttled ≤ max(best static / 5, 0.05%)", mean("legit_throttled_fraction") <= limit,
			"%s vs limit %s (best static %s: %s)", pct(mean("legit_throttled_fraction")), pct(limit), who, pct(b))
	}
	if b, who, ok := s.best("legit_key_days_throttled_fraction"); ok {
		add("legit key-days throttled ≤ best static", mean("legit_key_days_throttled_fraction") <= b,
			"%s vs %s (%s)", pct(mean("legit_key_days_throttled_fraction")), pct(b), who)
	}
	if b, who, ok := s.best("abuse_served_fraction"); ok && s.HasAbuse {
		add("abuse served ≤ best static / 3", mean("abuse_served_fraction") <= b/3,
			"%s vs limit %s (best static %s: %s)", pct(mean("abuse_served_fraction")), pct(b/3), who, pct(b))
	}
	if b, who, ok := s.best("enterprise_throttled_fraction"); ok {
		below := mean("enterprise_key_epochs_below_floor")
		add("enterprise: 0 key-epochs below floor, throttled ≤ best static", below == 0 && mean("enterprise_throttled_fraction") <= b,
			"%.1f key-epochs below floor; throttled %s vs %s (%s)", below, pct(mean("enterprise_throttled_fraction")), pct(b), who)
	}
	if st, ok := s.Policies[PolicyStaticTier]; ok && s.FlashCrowd {
		b := st["legit_throttled_fraction"].Mean
		add("flash crowd: legit throttled ≤ static-tier's", mean("legit_throttled_fraction") <= b,
			"%s vs %s", pct(mean("legit_throttled_fraction")), pct(b))
	}
	if o, ok := s.Policies[PolicyOracle]; ok {
		for _, m := range []string{"legit_throttled_fraction", "abuse_served_fraction"} {
			if m == "abuse_served_fraction" && !s.HasAbuse {
				continue
			}
			b, who, ok := s.best(m)
			if !ok {
				continue
			}
			gap := b - o[m].Mean
			closed := 1.0
			if gap > 0 {
				closed = (b - mean(m)) / gap
			}
			add("closes ≥ 70% of best static → oracle gap: "+strings.TrimSuffix(m, "_fraction"), closed >= 0.7,
				"%.0f%% of the gap (%s: %s, oracle %s, %s %s)", 100*closed, who, pct(b), pct(o[m].Mean), policy, pct(mean(m)))
		}
	}
	return out
}

// PackOptions configure RunPack.
type PackOptions struct {
	Seeds    []uint64
	Policies []string
	Workers  int
	// Progress, when set, is called after every epoch with the key-epochs
	// done and the total over every scenario, seed and policy.
	Progress func(done, total int64)
	// Out, when set, receives each run's results.json and report.md under
	// Out/<scenario>/seed-<n>/.
	Out string
	// NoWall writes wall_s as 0.
	NoWall bool
}

// PackResult is a pack of scenarios over seeds.
type PackResult struct {
	Seeds     []uint64          `json:"seeds"`
	Scenarios []ScenarioSummary `json:"scenarios"`
}

// RunPack runs every scenario with every seed.
func RunPack(ctx context.Context, scenarios []*Scenario, o PackOptions) (*PackResult, error) {
	if len(o.Seeds) == 0 {
		return nil, fmt.Errorf("sim: no seed to run")
	}
	// Run runs the oracle whether asked or not.
	runs := len(o.Policies)
	if !slices.Contains(o.Policies, PolicyOracle) {
		runs++
	}
	var total, offset int64
	for _, s := range scenarios {
		total += int64(len(o.Seeds)) * int64(runs) * int64(s.Epochs()) * int64(s.Keys())
	}
	res := &PackResult{Seeds: o.Seeds}
	for _, s := range scenarios {
		var results []*Results
		for _, seed := range o.Seeds {
			base := offset
			progress := func(done, _ int64) {
				if o.Progress != nil {
					o.Progress(base+done, total)
				}
			}
			r, err := Run(ctx, s, Options{Seed: seed, Policies: o.Policies, Workers: o.Workers, Progress: progress})
			if err != nil {
				return nil, fmt.Errorf("%s, seed %d: %w", s.Name, seed, err)
			}
			offset += int64(runs) * int64(s.Epochs()) * int64(s.Keys())
			if o.NoWall {
				for name, p := range r.Policies {
					p.WallS = 0
					r.Policies[name] = p
				}
			}
			if o.Out != "" {
				dir := filepath.Join(o.Out, s.Name, fmt.Sprintf("seed-%d", seed))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, err
				}
				if err := writeFile(filepath.Join(dir, "results.json"), r.WriteJSON); err != nil {
					return nil, err
				}
				if err := writeFile(filepath.Join(dir, "report.md"), func(w io.Writer) error { return r.WriteReport(w, nil) }); err != nil {
					return nil, err
				}
			}
			results = append(results, r)
		}
		res.Scenarios = append(res.Scenarios, Summarize(s, results))
	}
	return res, nil
}

func writeFile(path string, write func(io.Writer) error) error {
	var b bytes.Buffer
	if err := write(&b); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// WriteJSON writes pack.json.
func (p *PackResult) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// iv formats a fraction's mean and interval in percent, the interval
// clipped to [0, 100%].
func iv(s Stat) string {
	if s.Lo == s.Hi {
		return fmt.Sprintf("%.3f%%", 100*s.Mean)
	}
	return fmt.Sprintf("%.3f%% [%.3f, %.3f]", 100*s.Mean, 100*math.Max(0, s.Lo), 100*math.Min(1, s.Hi))
}

func ivCount(s Stat) string {
	if s.Lo == s.Hi {
		return fmt.Sprintf("%.1f", s.Mean)
	}
	return fmt.Sprintf("%.1f [%.1f, %.1f]", s.Mean, math.Max(0, s.Lo), s.Hi)
}

// WriteTable writes the pack's table: scenario × policy × outcome, each a
// mean over the seeds with its 95% interval, then the targets.
func (p *PackResult) WriteTable(w io.Writer) error {
	var b bytes.Buffer
	seeds := make([]string, len(p.Seeds))
	for i, s := range p.Seeds {
		seeds[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(&b, "# Scenario pack: %d scenarios × seeds %s\n\n", len(p.Scenarios), strings.Join(seeds, ", "))
	b.WriteString("Each cell is the mean over the seeds with its 95% interval (Student's t). Fractions are of the requests " +
		"(or legitimate key-days) each policy was offered; lower is better in every column. Policies are defined in each run's report.md.\n\n")
	b.WriteString("| scenario | policy | legit throttled | legit key-days throttled | enterprise throttled | enterprise key-epochs below floor | abuse served |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	for _, s := range p.Scenarios {
		for _, name := range s.Order {
			m := s.Policies[name]
			abuse := iv(m["abuse_served_fraction"])
			if !s.HasAbuse {
				abuse = "—"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.Scenario, name, iv(m["legit_throttled_fraction"]),
				iv(m["legit_key_days_throttled_fraction"]), iv(m["enterprise_throttled_fraction"]),
				ivCount(m["enterprise_key_epochs_below_floor"]), abuse)
		}
	}
	b.WriteString("\n## Targets (issue 17), lints on the means\n\n| scenario | target | result | detail |\n|---|---|---|---|\n")
	pass, all := 0, 0
	for _, s := range p.Scenarios {
		for _, c := range s.Checks {
			mark := "miss"
			if c.Pass {
				mark = "pass"
				pass++
			}
			all++
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Scenario, c.Target, mark, c.Detail)
		}
	}
	fmt.Fprintf(&b, "\n%d of %d targets met.\n", pass, all)
	b.WriteString("\n## Bound\n\nThe oracle bounds every outcome of every policy on every scenario")
	var beats []string
	for _, s := range p.Scenarios {
		o, ok := s.Policies[PolicyOracle]
		if !ok {
			continue
		}
		for _, name := range s.Order {
			for _, m := range OutcomeMetrics {
				if s.Policies[name][m].Mean < o[m].Mean-1e-12 {
					beats = append(beats, fmt.Sprintf("%s: %s on %s", s.Scenario, name, m))
				}
			}
		}
	}
	if len(beats) == 0 {
		b.WriteString(": no policy beats it.\n")
	} else {
		b.WriteString(", except (a bug in the oracle or the metric): " + strings.Join(beats, "; ") + ".\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteTierTable writes each scenario's outcomes per tier.
func (p *PackResult) WriteTierTable(w io.Writer) error {
	var b bytes.Buffer
	b.WriteString("| scenario | tier | policy | legit throttled | legit key-days throttled | key-epochs below floor | abuse served |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|\n")
	for _, s := range p.Scenarios {
		var tiers []string
		for _, name := range s.Order {
			for t := range s.Tiers[name] {
				if !slices.Contains(tiers, t) {
					tiers = append(tiers, t)
				}
			}
		}
		sort.Strings(tiers)
		for _, t := range tiers {
			for _, name := range s.Order {
				m, ok := s.Tiers[name][t]
				if !ok {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.Scenario, t, name, iv(m["legit_throttled_fraction"]),
					iv(m["legit_key_days_throttled_fraction"]), ivCount(m["key_epochs_below_floor"]), iv(m["abuse_served_fraction"]))
			}
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}
