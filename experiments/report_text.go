package experiments

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteText writes the report as tables for people.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("decision log: %d decisions, %d outcomes, %d joined key-epochs (%d open, %d orphan outcomes, %d outside the experiments file); %d labels\n",
		r.Decisions, r.Outcomes, r.Epochs, r.Open, r.Orphans, r.Unassigned, r.Labels)
	for _, x := range r.Experiments {
		ew.printf("\nexperiment %s (control: %s)\n", x.Name, x.Control)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "variant\tpolicy\tshare\tunits\tepochs\trequests\tthrottle rate [95% CI]\tΔ vs control\tenterprise throttle\tabuse rate\treward/epoch [95% CI]")
		for _, v := range x.Variants {
			ent := "-"
			if iv := v.EnterpriseThrottleRate; iv != nil {
				ent = pctIv(iv)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Policy, 100*v.Share, v.Units, v.Epochs,
				v.Requests, pctIv(v.ThrottleRate), pctDiff(v.ThrottleDiff), ent, pctIv(v.AbuseRate), numIv(v.Reward))
		}
		tw.Flush()
		tiers := map[string]bool{}
		for _, v := range x.Variants {
			for t := range v.TierThrottleRate {
				tiers[t] = true
			}
		}
		if len(tiers) > 1 {
			names := make([]string, 0, len(tiers))
			for t := range tiers {
				names = append(names, t)
			}
			sort.Strings(names)
			ew.printf("throttle rate by tier:\n")
			tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "variant\t%s\n", strings.Join(names, "\t"))
			for _, v := range x.Variants {
				cells := make([]string, len(names))
				for i, t := range names {
					cells[i] = pctIv(v.TierThrottleRate[t])
				}
				fmt.Fprintf(tw, "%s\t%s\n", v.Name, strings.Join(cells, "\t"))
			}
			tw.Flush()
		}
		if s := x.SRM; s.P != nil {
			verdict := "ok"
			if s.Mismatch {
				verdict = fmt.Sprintf("SAMPLE-RATIO MISMATCH (p < %g): assignment or logging is broken; do not trust this experiment's results", SRMAlpha)
			}
			ew.printf("SRM: units %v vs bucket shares %s: χ² = %.3g (df %d), p = %.3g: %s\n",
				s.Units, shares(s.Shares), *s.Chi2, positive(s.Shares)-1, *s.P, verdict)
		}
		if len(x.OPE) > 0 {
			ew.printf("off-policy estimates of candidate policies (mean reward per key-epoch, 95%% CI), from the %d key-epochs whose arm the bandit drew:\n", x.OPEEpochs)
			tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "candidate\tIPS\tSNIPS\tDR\tsupport\tESS")
			for _, c := range x.OPE {
				ess := "-"
				if c.IPS != nil {
					ess = fmt.Sprintf("%.0f of %d", c.IPS.ESS, c.IPS.N)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f%%\t%s\n", c.Name, est(c.IPS), est(c.SNIPS), est(c.DR), 100*c.Support, ess)
			}
			tw.Flush()
		}
		for _, n := range x.Notes {
			ew.printf("note: %s\n", n)
		}
	}
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

func pctIv(iv *Interval) string {
	if iv == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f%% [%.2f, %.2f]", 100*iv.Estimate, 100*iv.Lo, 100*iv.Hi)
}

func pctDiff(iv *Interval) string {
	if iv == nil {
		return "-"
	}
	return fmt.Sprintf("%+.2f pp [%+.2f, %+.2f]", 100*iv.Estimate, 100*iv.Lo, 100*iv.Hi)
}

func numIv(iv *Interval) string {
	if iv == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g [%.4g, %.4g]", iv.Estimate, iv.Lo, iv.Hi)
}

func est(e *EstimateOut) string {
	if e == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g [%.4g, %.4g]", e.Value, e.Lo, e.Hi)
}

func shares(s []float64) string {
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = fmt.Sprintf("%.1f%%", 100*x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func positive(s []float64) int {
	n := 0
	for _, x := range s {
		if x > 0 {
			n++
		}
	}
	return n
}
