package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/devflow/flowguard/quotas"
	"github.com/devflow/flowguard/rewards"
)

// Results is the outcome of Run. Its JSON form is the simulator contract
// of DESIGN.md ("Simulator output"): only Scenario, Seed and Policies are
// written to results.json; the series and details go to the report, the
// plots and details.json.
type Results struct {
	Scenario string                  `json:"scenario"`
	Seed     uint64                  `json:"seed"`
	Policies map[string]PolicyResult `json:"policies"`

	// Order is the policies in report order.
	Order []string `json:"-"`
	// Series are per-policy time series, one point per BucketEpochs.
	Series map[string]*Series `json:"-"`
	// Details are the per-policy figures beyond the contract.
	Details      map[string]*Details `json:"-"`
	Epoch        time.Duration       `json:"-"`
	BucketEpochs int                 `json:"-"`
	Start        time.Time           `json:"-"`

	throttledPerKey map[string][]float64
	usage           map[string][]quotas.UsageRow // Options.KeepUsage
	scenario        *Scenario
}

// PolicyResult is one policy's line of results.json (contract). Requests
// are counted per key-epoch: legitimate ones are those of legitimate keys
// and the legitimate share of shared keys, abusive ones the rest.
type PolicyResult struct {
	LegitRequests          int64   `json:"legit_requests"`
	LegitThrottled         int64   `json:"legit_throttled"`
	LegitThrottledFraction float64 `json:"legit_throttled_fraction"`
	// LegitKeysThrottledFraction is the share of legitimate keys with at
	// least one request throttled or blocked during the run.
	LegitKeysThrottledFraction float64 `json:"legit_keys_throttled_fraction"`
	// LegitKeyDaysThrottledFraction is the share of legitimate keys'
	// days with demand in which the key had a request throttled or
	// blocked: "legitimate keys throttled at least once in a day".
	LegitKeyDaysThrottledFraction float64 `json:"legit_key_days_throttled_fraction"`
	EnterpriseThrottledFraction   float64 `json:"enterprise_throttled_fraction"`
	// EnterpriseKeyEpochsBelowFloor counts the legitimate enterprise
	// key-epochs (of EnterpriseKeyEpochs with demand) throttled while
	// served less than the floor budget admits.
	EnterpriseKeyEpochsBelowFloor int64 `json:"enterprise_key_epochs_below_floor"`
	EnterpriseKeyEpochs           int64 `json:"enterprise_key_epochs"`
	AbuseRequests                 int64 `json:"abuse_requests"`
	// AbuseServedFraction is the abusive requests served over the abusive
	// requests offered to this policy (adaptive abusers offer each policy
	// what it lets through).
	AbuseServedFraction float64 `json:"abuse_served_fraction"`
	// Reward is the scenario's objective (rewards.Weights) summed over
	// key-epochs, scored with the true abusive share, not the labels.
	Reward float64 `json:"reward"`
	// RewardTerms is Reward split into its terms (rewards.Terms).
	RewardTerms rewards.Terms `json:"reward_terms"`
	// RegretVsOracle is the oracle's reward minus this one. The oracle is
	// an outcome bound, not the reward's maximiser, so this may be
	// negative: read the outcomes first.
	RegretVsOracle float64 `json:"regret_vs_oracle"`
	// FallbackEpochs are key-epochs decided on the deterministic budget
	// because of an incident (stale model, Redis down).
	FallbackEpochs int64 `json:"fallback_epochs"`
	// DriftEpochs are the fallback key-epochs of learning.drift: the
	// features had drifted from what the model learned on.
	DriftEpochs int64 `json:"drift_epochs"`
	KeyEpochs   int64 `json:"key_epochs"`
	// Tiers are the outcomes per tier.
	Tiers map[string]TierResult `json:"tiers"`
	// Variants are the outcomes of each experiment variant's keys, by
	// "experiment/variant", for the learning policies run with the
	// scenario's experiments file.
	Variants map[string]VariantResult `json:"variants,omitempty"`
	// WallS is the wall time of the policy's run: the one field that
	// differs between two runs of the same seed.
	WallS float64 `json:"wall_s"`
}

// TierResult is what one tier's keys got under a policy.
type TierResult struct {
	LegitRequests                 int64   `json:"legit_requests"`
	LegitThrottledFraction        float64 `json:"legit_throttled_fraction"`
	LegitKeyDaysThrottledFraction float64 `json:"legit_key_days_throttled_fraction"`
	KeyEpochsBelowFloor           int64   `json:"key_epochs_below_floor"` // enterprise-class tiers only
	AbuseRequests                 int64   `json:"abuse_requests"`
	AbuseServedFraction           float64 `json:"abuse_served_fraction"`
}

// VariantResult is what one experiment variant's keys got under a policy.
type VariantResult struct {
	KeyEpochs                   int64   `json:"key_epochs"`
	LegitRequests               int64   `json:"legit_requests"`
	LegitThrottledFraction      float64 `json:"legit_throttled_fraction"`
	EnterpriseThrottledFraction float64 `json:"enterprise_throttled_fraction"`
	AbuseRequests               int64   `json:"abuse_requests"`
	AbuseServedFraction         float64 `json:"abuse_served_fraction"`
}

// AbuseServed returns the abusive requests served.
func (p PolicyResult) AbuseServed() float64 {
	return math.Round(p.AbuseServedFraction * float64(p.AbuseRequests))
}

// Series is a policy's results over time.
type Series struct {
	LegitThrottleRate []float64 `json:"legit_throttle_rate"`
	AbuseServed       []float64 `json:"abuse_served_fraction"`
	CumReward         []float64 `json:"cumulative_reward"`
	CumRegret         []float64 `json:"cumulative_regret"`
}

func (s *Series) regret(oracle *Series) {
	s.CumRegret = make([]float64, len(s.CumReward))
	for i := range s.CumReward {
		s.CumRegret[i] = oracle.CumReward[i] - s.CumReward[i]
	}
}

// Details are figures beyond the contract, written to details.json.
type Details struct {
	// AbuseRequestsByKind and AbuseServedByKind break abuse down by kind
	// of abuser.
	AbuseRequestsByKind map[string]int64   `json:"abuse_requests_by_kind"`
	AbuseServedByKind   map[string]float64 `json:"abuse_served_fraction_by_kind"`
	// EnterpriseFloorViolations counts key-epochs in which a legitimate
	// enterprise key was throttled while served less than its floor
	// budget admits. It must be 0.
	EnterpriseFloorViolations int64 `json:"enterprise_floor_violations"`
	BlockedKeyEpochs          int64 `json:"blocked_key_epochs"`
	// Decisions are the key-epochs with traffic: the ones stage 2 runs
	// for. KeyEpochs in results.json counts every key in every epoch.
	Decisions          int64 `json:"decisions"`
	LegitKeys          int   `json:"legit_keys"`
	LegitKeysThrottled int   `json:"legit_keys_throttled"`
	// QuotaFits counts static-p99's fits; Quotas lists them as
	// "until endpoint quota".
	QuotaFits int      `json:"quota_fits,omitempty"`
	Quotas    []string `json:"quotas,omitempty"`
	// Learner is the ML policies' learner counters.
	Learner *rewards.Stats `json:"learner,omitempty"`
}

// WriteJSON writes results.json: the contract, indented, keys sorted.
func (r *Results) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteDetails writes details.json: per-policy details and series.
func (r *Results) WriteDetails(w io.Writer) error {
	type out struct {
		Details *Details `json:"details"`
		Series  *Series  `json:"series"`
	}
	m := map[string]out{}
	for name := range r.Policies {
		m[name] = out{r.Details[name], r.Series[name]}
	}
	b, err := json.MarshalIndent(struct {
		Scenario     string         `json:"scenario"`
		Seed         uint64         `json:"seed"`
		BucketEpochs int            `json:"bucket_epochs"`
		Epoch        string         `json:"epoch"`
		Policies     map[string]out `json:"policies"`
	}{r.Scenario, r.Seed, r.BucketEpochs, r.Epoch.String(), m}, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteReport writes report.md: what the scenario is, what each policy
// does, the outcomes overall and per tier (the headline), the targets of
// issue 17 judged on this seed, the reward split into its terms, abuse by
// kind, and the plots. It holds no wall times, so the same seed gives the
// same report.
func (r *Results) WriteReport(w io.Writer, plots []string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Simulation: %s (seed %d)\n\n", r.Scenario, r.Seed)
	if s := r.scenario; s != nil {
		r.writeSummary(&b, s)
	}
	b.WriteString("## Outcomes\n\nFractions of what each policy was offered; lower is better in every column. " +
		"Legit key-days: the share of legitimate keys' days with demand in which the key was throttled at least once. " +
		"Below floor: legitimate enterprise key-epochs throttled while served less than the floor budget admits. " +
		"Abuse served: abusive requests served over the abusive requests offered to that policy (adaptive abusers react to each).\n\n")
	b.WriteString("| policy | legit throttled | legit keys throttled (run) | legit key-days throttled | enterprise throttled | enterprise key-epochs below floor | abuse served | fallback key-epochs |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, name := range r.Order {
		p := r.Policies[name]
		fb := strconv.FormatInt(p.FallbackEpochs, 10)
		if p.DriftEpochs > 0 {
			fb += fmt.Sprintf(" (drift %d)", p.DriftEpochs)
		}
		fmt.Fprintf(&b, "| %s | %s (%d of %d) | %s | %s | %s | %d of %d | %s (of %d) | %s |\n", name,
			pct(p.LegitThrottledFraction), p.LegitThrottled, p.LegitRequests, pct(p.LegitKeysThrottledFraction),
			pct(p.LegitKeyDaysThrottledFraction), pct(p.EnterpriseThrottledFraction), p.EnterpriseKeyEpochsBelowFloor,
			p.EnterpriseKeyEpochs, pct(p.AbuseServedFraction), p.AbuseRequests, fb)
	}
	var tiers []string
	for _, name := range r.Order {
		for t := range r.Policies[name].Tiers {
			if !slices.Contains(tiers, t) {
				tiers = append(tiers, t)
			}
		}
	}
	sort.Strings(tiers)
	if len(tiers) > 0 {
		b.WriteString("\n## Outcomes per tier\n\n| tier | policy | legit throttled | legit key-days throttled | key-epochs below floor | abuse served |\n|---|---|---:|---:|---:|---:|\n")
		for _, t := range tiers {
			for _, name := range r.Order {
				tr, ok := r.Policies[name].Tiers[t]
				if !ok {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s | %s (of %d) | %s | %d | %s (of %d) |\n", t, name, pct(tr.LegitThrottledFraction),
					tr.LegitRequests, pct(tr.LegitKeyDaysThrottledFraction), tr.KeyEpochsBelowFloor,
					pct(tr.AbuseServedFraction), tr.AbuseRequests)
			}
		}
	}
	if r.scenario != nil {
		sum := Summarize(r.scenario, []*Results{r})
		if len(sum.Checks) > 0 {
			b.WriteString("\n## Targets (issue 17), lints, this seed\n\n\"Best static\" is the best of static-p99, static-p99-tier and static-tier per metric. " +
				"One seed decides nothing: `--seeds 1..N` gives intervals.\n\n| target | result | detail |\n|---|---|---|\n")
			for _, c := range sum.Checks {
				mark := "miss"
				if c.Pass {
					mark = "pass"
				}
				fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Target, mark, c.Detail)
			}
		}
	}
	b.WriteString("\n## Reward, by term\n\nThe objective the bandit maximises (rewards.Weights), summed over key-epochs with the true abusive share. " +
		"It is not the headline: the headroom term pays for generosity alone, so a generous policy scores well on it whatever it serves. " +
		"The oracle is an outcome bound, not the reward's maximiser, so regret may be negative.\n\n")
	b.WriteString("| policy | reward | served | throttled | abuse | headroom | regret vs oracle |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, name := range r.Order {
		p := r.Policies[name]
		t := p.RewardTerms
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", name, p.Reward, t.Served, t.Throttled, t.Abuse, t.Headroom, p.RegretVsOracle)
	}
	kinds := map[string]bool{}
	for _, d := range r.Details {
		for k := range d.AbuseServedByKind {
			kinds[k] = true
		}
	}
	if len(kinds) > 0 {
		var ks []string
		for k := range kinds {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		b.WriteString("\n## Abuse served, by kind of abuser\n\n| policy | " + strings.Join(ks, " | ") + " |\n|---|" +
			strings.Repeat("---:|", len(ks)) + "\n")
		for _, name := range r.Order {
			fmt.Fprintf(&b, "| %s |", name)
			for _, k := range ks {
				fmt.Fprintf(&b, " %s |", pct(r.Details[name].AbuseServedByKind[k]))
			}
			b.WriteString("\n")
		}
	}
	for _, name := range r.Order {
		p := r.Policies[name]
		if len(p.Variants) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## Experiment variants under %s\n\n", name)
		b.WriteString("| variant | key-epochs | legit throttled | enterprise throttled | abuse served |\n|---|---:|---:|---:|---:|\n")
		ids := make([]string, 0, len(p.Variants))
		for id := range p.Variants {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			v := p.Variants[id]
			fmt.Fprintf(&b, "| %s | %d | %s (of %d) | %s | %s (of %d) |\n", id, v.KeyEpochs, pct(v.LegitThrottledFraction),
				v.LegitRequests, pct(v.EnterpriseThrottledFraction), pct(v.AbuseServedFraction), v.AbuseRequests)
		}
	}
	b.WriteString("\n## Checks\n\n")
	for _, name := range r.Order {
		fmt.Fprintf(&b, "- %s: blocked key-epochs: %d\n", name, r.Details[name].BlockedKeyEpochs)
	}
	if len(plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, p := range plots {
			fmt.Fprintf(&b, "![%s](%s)\n", strings.TrimSuffix(p, ".png"), p)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeSummary is the report's first section: the scenario, and the
// policies compared.
func (r *Results) writeSummary(b *bytes.Buffer, s *Scenario) {
	if s.Description != "" {
		fmt.Fprintf(b, "%s\n\n", s.Description)
	}
	fmt.Fprintf(b, "## Scenario\n\n- %v from %s, epochs of %v, %d regions; %d keys\n", s.Duration, s.start.Format(time.RFC3339),
		s.Epoch, s.Regions, s.Keys())
	byTier := map[string]int{}
	for _, t := range s.Tenants {
		byTier[t.Tier] += t.Keys
	}
	var ts []string
	for t, n := range byTier {
		tier, _ := s.policy.Tier(t)
		ts = append(ts, fmt.Sprintf("%s %d keys (%s)", t, n, tier.Class))
	}
	sort.Strings(ts)
	fmt.Fprintf(b, "- legitimate: %d tenants; %s\n", len(s.Tenants), strings.Join(ts, ", "))
	if len(s.Abusers) == 0 {
		b.WriteString("- abuse: none\n")
	} else {
		var as []string
		for _, a := range s.Abusers {
			as = append(as, fmt.Sprintf("%d %s on %s from %v (median %.0f/day)", a.Keys, a.Kind, a.Tenant, a.Start, a.Daily.Median))
		}
		fmt.Fprintf(b, "- abuse: %s\n", strings.Join(as, "; "))
	}
	l := s.Labels
	fmt.Fprintf(b, "- labels: %.0f%% of abusive keys, median delay %v, false abusive labels %.2f%% per legitimate key-day, "+
		"label start error σ %v, severity error σ %.2f\n", 100*l.Coverage, l.DelayMedian, 100*l.FalseRate, *l.IntervalNoise, *l.SeverityNoise)
	if len(s.Incidents) == 0 {
		b.WriteString("- incidents: none\n")
	} else {
		var is []string
		for _, in := range s.Incidents {
			is = append(is, fmt.Sprintf("%s at %v for %v", in.Kind, in.At, in.Duration))
		}
		fmt.Fprintf(b, "- incidents (shaded in the plots): %s\n", strings.Join(is, "; "))
	}
	b.WriteString("\n## Policies\n\n")
	for _, name := range r.Order {
		fmt.Fprintf(b, "- **%s**: %s\n", name, PolicyDefinitions[name])
	}
	b.WriteString("\n")
}

func pct(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) }

func ratio(a, b float64) string {
	if b == 0 {
		if a == 0 {
			return "0/0"
		}
		return "∞"
	}
	return fmt.Sprintf("%.1f%%", 100*a/b)
}

// UsagePolicies are the policies whose usage was kept (Options.KeepUsage).
func (r *Results) UsagePolicies() []string {
	var out []string
	for _, name := range r.Order {
		if _, ok := r.usage[name]; ok {
			out = append(out, name)
		}
	}
	return out
}

// WriteUsageCSV writes the daily usage a static-p99 policy fitted on —
// the history before the run and each simulated day, malicious as its
// labels judged it — as a usage CSV file for flowguard quotas.
func (r *Results) WriteUsageCSV(policy string, w io.Writer) error {
	rows, ok := r.usage[policy]
	if !ok {
		return fmt.Errorf("sim: no usage kept for %s (Options.KeepUsage, static-p99 policies only)", policy)
	}
	return quotas.WriteUsageCSV(w, rows)
}

// WriteDir writes results.json, details.json, report.md and the plots
// into dir, creating it.
func (r *Results) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	plots, err := r.WritePlots(dir)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{"results.json", r.WriteJSON},
		{"details.json", r.WriteDetails},
		{"report.md", func(w io.Writer) error { return r.WriteReport(w, plots) }},
	} {
		var b bytes.Buffer
		if err := f.write(&b); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
