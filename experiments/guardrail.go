package experiments

import (
	"errors"
	"fmt"
	"time"
)

// A VariantID names one variant of one experiment.
type VariantID struct {
	Experiment, Variant string
}

func (id VariantID) String() string { return id.Experiment + "/" + id.Variant }

// Counts are one variant's outcome counters over the experiment so far.
// Each XxxThrottled is at most its XxxRequests.
type Counts struct {
	Requests, Throttled                     int64
	EnterpriseRequests, EnterpriseThrottled int64
	// LegitRequests and LegitThrottled count requests of keys not labelled
	// abusive (so far).
	LegitRequests, LegitThrottled int64
	// Complaints are false-throttle complaints from the variant's units.
	Complaints int64
}

// A Trip is a guardrail a variant went past.
type Trip struct {
	Experiment, Variant string
	Metric              Metric
	// Value is what was compared with Threshold: a Wilson bound, a ratio of
	// bounds or a count (see CheckGuardrails).
	Value, Threshold float64
	// Reason says it in words, with the point estimates and sample sizes.
	Reason string
}

// StopRecord returns the stop record of the trip, for StopLog.Append.
func (t Trip) StopRecord(configDigest string, at time.Time) StopRecord {
	return StopRecord{
		Op: OpStop, Experiment: t.Experiment, Variant: t.Variant,
		Metric: t.Metric, Value: t.Value, Threshold: t.Threshold,
		Reason: t.Reason, Time: at.UTC(), ConfigDigest: configDigest,
	}
}

// CheckGuardrails evaluates every guardrail of every experiment in cfg
// against the counters, and returns the trips in file order. A variant
// missing from counts has zero counts. It is pure: persisting and applying
// a stop is the caller's (StopLog.Append, then Assigner.Stop).
//
// The control never trips: it is the deterministic status quo, and
// stopping it would change nothing. A guardrail is skipped until the
// variant (and, for a ratio, the control) has MinRequests requests of the
// kind the metric counts. Rates are judged conservatively, so that noise
// does not stop a good variant:
//
//   - enterprise_throttle_rate trips when the 95% Wilson lower bound of the
//     variant's enterprise throttle rate is above the threshold;
//   - legit_throttle_rate_vs_control trips when the variant's 95% Wilson
//     lower bound divided by the control's 95% Wilson upper bound is above
//     the threshold;
//   - complaints trips when the count is above the threshold.
//
// Counts that are impossible (negative, or more throttled than requests)
// are reported in the error and their guardrails skipped.
func CheckGuardrails(cfg *Config, counts map[VariantID]Counts) ([]Trip, error) {
	var trips []Trip
	var errs []error
	for _, e := range cfg.Experiments {
		control := counts[VariantID{e.Name, e.Control}]
		for _, v := range e.Variants {
			if v.Name == e.Control {
				continue
			}
			id := VariantID{e.Name, v.Name}
			c := counts[id]
			for _, g := range e.Guardrails {
				t, tripped, err := g.check(c, control)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s %s: %w", id, g.Metric, err))
					continue
				}
				if tripped {
					t.Experiment, t.Variant = e.Name, v.Name
					trips = append(trips, t)
				}
			}
		}
	}
	return trips, errors.Join(errs...)
}

func (g Guardrail) check(c, control Counts) (Trip, bool, error) {
	t := Trip{Metric: g.Metric, Threshold: g.Threshold}
	switch g.Metric {
	case MetricEnterpriseThrottleRate:
		iv, err := Wilson(c.EnterpriseThrottled, c.EnterpriseRequests, Z95)
		if err != nil || c.EnterpriseRequests < max(g.MinRequests, 1) {
			return t, false, err
		}
		t.Value = iv.Lo
		t.Reason = fmt.Sprintf("enterprise throttle rate %s (95%% CI %s–%s, %d of %d requests): lower bound above max %s",
			pct(iv.Estimate), pct(iv.Lo), pct(iv.Hi), c.EnterpriseThrottled, c.EnterpriseRequests, pct(g.Threshold))
		return t, iv.Lo > g.Threshold, nil
	case MetricLegitThrottleRatio:
		v, err := Wilson(c.LegitThrottled, c.LegitRequests, Z95)
		if err != nil {
			return t, false, err
		}
		ctl, err := Wilson(control.LegitThrottled, control.LegitRequests, Z95)
		if err != nil {
			return t, false, fmt.Errorf("control: %w", err)
		}
		need := max(g.MinRequests, 1)
		if c.LegitRequests < need || control.LegitRequests < need {
			return t, false, nil
		}
		t.Value = v.Lo / ctl.Hi
		t.Reason = fmt.Sprintf("legit throttle rate %s (95%% CI %s–%s, n=%d) vs control %s (%s–%s, n=%d): conservative ratio %.3g above max_ratio %g",
			pct(v.Estimate), pct(v.Lo), pct(v.Hi), c.LegitRequests,
			pct(ctl.Estimate), pct(ctl.Lo), pct(ctl.Hi), control.LegitRequests, t.Value, g.Threshold)
		return t, t.Value > g.Threshold, nil
	case MetricComplaints:
		if c.Complaints < 0 || c.Requests < 0 {
			return t, false, fmt.Errorf("%w: %d complaints over %d requests", ErrCounts, c.Complaints, c.Requests)
		}
		if c.Requests < g.MinRequests {
			return t, false, nil
		}
		t.Value = float64(c.Complaints)
		t.Reason = fmt.Sprintf("%d complaints over %d requests: above max %g", c.Complaints, c.Requests, g.Threshold)
		return t, t.Value > g.Threshold, nil
	}
	return t, false, fmt.Errorf("unknown metric %q", g.Metric)
}

func pct(p float64) string { return fmt.Sprintf("%.3g%%", 100*p) }
