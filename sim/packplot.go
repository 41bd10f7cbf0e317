package sim

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// packCharts are the per-tier outcomes the pack draws, by file suffix.
var packCharts = []struct {
	suffix, metric, title, y string
	abuse                    bool
}{
	{"legit", "legit_throttled_fraction", "legitimate requests throttled per tier", "% of legitimate requests", false},
	{"abuse", "abuse_served_fraction", "abusive requests served per tier", "% of abusive requests offered", true},
}

// WritePlots draws each scenario's outcomes per tier as bar charts, as
// PNG files in dir: pack-<scenario>-legit.png, the legitimate requests
// throttled, and pack-<scenario>-abuse.png, the abusive requests served
// (only for scenarios with abuse). Tiers are the groups and policies the
// bars; a bar is the mean over the seeds and its whisker the 95% interval,
// clamped at 0. The legend is drawn to the right of the axes. It returns
// the file names.
func (p *PackResult) WritePlots(dir string) ([]string, error) {
	var files []string
	for _, s := range p.Scenarios {
		tiers := summaryTiers(s)
		if len(tiers) == 0 || len(s.Order) == 0 {
			continue
		}
		for _, c := range packCharts {
			if c.abuse && !s.HasAbuse {
				continue
			}
			file := fmt.Sprintf("pack-%s-%s.png", fileSafe(s.Scenario), c.suffix)
			pl, err := tierBarChart(s, tiers, c.metric)
			if err != nil {
				return nil, fmt.Errorf("sim: plot %s: %w", file, err)
			}
			pl.Title.Text = fmt.Sprintf("%s: %s", s.Scenario, c.title)
			pl.Y.Label.Text = c.y
			pl.X.Label.Text = fmt.Sprintf("tier (bar: mean of %d seeds; whisker: 95%% interval)", len(s.Seeds))
			if c.abuse {
				// The summary keeps no abuse count per tier: a tier
				// offered no abuse reads 0.
				pl.X.Label.Text = fmt.Sprintf("tier (bar: mean of %d seeds; whisker: 95%% interval; 0 where a tier was offered no abuse)", len(s.Seeds))
			}
			if err := savePlot(pl, filepath.Join(dir, file)); err != nil {
				return nil, fmt.Errorf("sim: plot %s: %w", file, err)
			}
			files = append(files, file)
		}
	}
	return files, nil
}

// summaryTiers are the tiers any policy of s has, sorted.
func summaryTiers(s ScenarioSummary) []string {
	var tiers []string
	for _, name := range s.Order {
		for t := range s.Tiers[name] {
			if !slices.Contains(tiers, t) {
				tiers = append(tiers, t)
			}
		}
	}
	slices.Sort(tiers)
	return tiers
}

// barGroup is the share of a tier's slot its bars fill.
const barGroup = 0.8

// tierBarChart draws metric per tier: one group of bars per tier, one bar
// per policy in s.Order, in percent.
func tierBarChart(s ScenarioSummary, tiers []string, metric string) (*plot.Plot, error) {
	pl := plot.New()
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	pl.Add(grid)
	width := barGroup / float64(len(s.Order))
	for j, name := range s.Order {
		var bars []plotter.XYer
		var tops plotter.XYs
		var errs plotter.YErrors
		for i, tier := range tiers {
			st, ok := s.Tiers[name][tier][metric]
			if !ok {
				continue
			}
			mean, below, above := barInterval(st)
			x := float64(i) - barGroup/2 + width*float64(j)
			bars = append(bars, plotter.XYs{{X: x, Y: 0}, {X: x + width, Y: 0}, {X: x + width, Y: 100 * mean}, {X: x, Y: 100 * mean}})
			if below > 0 || above > 0 {
				tops = append(tops, plotter.XY{X: x + width/2, Y: 100 * mean})
				errs = append(errs, struct{ Low, High float64 }{100 * below, 100 * above})
			}
		}
		if len(bars) == 0 {
			continue
		}
		poly, err := plotter.NewPolygon(bars...)
		if err != nil {
			return nil, err
		}
		poly.Color = policyLine(name).Color
		poly.LineStyle.Width = 0
		pl.Add(poly)
		pl.Legend.Add(name, poly)
		if len(tops) > 0 {
			eb, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{tops, errs})
			if err != nil {
				return nil, err
			}
			eb.LineStyle.Width = vg.Points(1)
			eb.CapWidth = vg.Points(4)
			pl.Add(eb)
		}
	}
	pl.NominalX(tiers...)
	pl.X.Min, pl.X.Max = -0.5, float64(len(tiers))-0.5
	pl.Y.Min = 0
	if pl.Y.Max <= 0 {
		pl.Y.Max = 1 // every bar is 0: an axis to show it on
	}
	return pl, nil
}

// barInterval is a fraction's bar height and how far its whisker reaches
// below and above it: the interval [Lo, Hi] clamped to [0, 1], the range
// of a fraction (Student's t over few seeds reaches past both).
func barInterval(s Stat) (mean, below, above float64) {
	lo, hi := math.Max(s.Lo, 0), math.Min(s.Hi, 1)
	return s.Mean, math.Max(s.Mean-lo, 0), math.Max(hi-s.Mean, 0)
}

// fileSafe is name with every character but letters, digits, '.', '_'
// and '-' replaced by '-', for a file name.
func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, name)
}
