package sim

import (
	"context"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"
)

// Every chart is 768×432 pixels: plotW×plotH at vgimg's 96 dpi.
const plotPixelsW, plotPixelsH = 768, 432

// decodePlot reads a chart and checks it is a PNG of the charts' size.
func decodePlot(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != plotPixelsW || b.Dy() != plotPixelsH {
		t.Fatalf("%s is %d×%d pixels, want %d×%d", path, b.Dx(), b.Dy(), plotPixelsW, plotPixelsH)
	}
	return img
}

func blank(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return r == 0xffff && g == 0xffff && b == 0xffff
}

// near reports whether c is want to within 6/255 on every channel.
func near(c, want color.Color) bool {
	r, g, b, _ := c.RGBA()
	wr, wg, wb, _ := want.RGBA()
	d := func(x, y uint32) bool { return math.Abs(float64(x)-float64(y)) <= 6*0x101 }
	return d(r, wr) && d(g, wg) && d(b, wb)
}

// countPixels counts the pixels of columns [x0, x1) that match.
func countPixels(img image.Image, x0, x1 int, match func(color.Color) bool) int {
	n := 0
	for x := x0; x < x1; x++ {
		for y := 0; y < img.Bounds().Dy(); y++ {
			if match(img.At(x, y)) {
				n++
			}
		}
	}
	return n
}

// legendGap finds the blank band between the axes and a legend drawn to
// their right: the widest run of wholly blank columns in the right half
// of img, with something drawn on both sides. Inside the axes no column
// is blank (the grid crosses them all), so a legend drawn over the data
// leaves no such band. It returns the band's first column and the one
// after it.
func legendGap(t *testing.T, img image.Image) (from, to int) {
	t.Helper()
	w := img.Bounds().Dx()
	empty := func(x int) bool { return countPixels(img, x, x+1, func(c color.Color) bool { return !blank(c) }) == 0 }
	best, bestFrom := 0, 0
	for x := w / 2; x < w; {
		if !empty(x) {
			x++
			continue
		}
		start := x
		for x < w && empty(x) {
			x++
		}
		if x < w && x-start > best {
			best, bestFrom = x-start, start
		}
	}
	// legendPad is 12 points: 16 pixels at 96 dpi; the gap between a
	// legend's swatches and its text is much narrower.
	if best < 12 {
		t.Fatalf("no blank band of at least 12 columns between the axes and the legend (widest %d)", best)
	}
	return bestFrom, bestFrom + best
}

// overWhite is the colour c fills with over a white background.
func overWhite(c color.NRGBA) color.Color {
	a := float64(c.A) / 255
	mix := func(v uint8) uint8 { return uint8(math.Round(float64(v)*a + 255*(1-a))) }
	return color.RGBA{R: mix(c.R), G: mix(c.G), B: mix(c.B), A: 0xff}
}

// The four time-series charts are PNGs of the same size with the legend
// to the right of the axes: a swatch of every policy there, the lines on
// the axes' side. An incident inside the run is shaded over its hours and
// named in the legend; incidents after the run are neither.
func TestWritePlots(t *testing.T) {
	cases := map[string]struct {
		staleAt  time.Duration // moves the stale-model incident; 0 leaves small.yaml's (30 h, after the run)
		shadeMin float64       // shaded columns as a share of the axes' side
		shadeMax float64
	}{
		"incident in the run":     {staleAt: time.Hour, shadeMin: 0.15, shadeMax: 0.32},
		"incidents after the run": {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := shrink(smallScenario(t), 4*time.Hour)
			if tc.staleAt > 0 {
				for i := range s.Incidents {
					if s.Incidents[i].Kind == StaleModel {
						s.Incidents[i].At, s.Incidents[i].Duration = tc.staleAt, time.Hour
					}
				}
			}
			res, err := Run(context.Background(), s, Options{Seed: 1, Policies: []string{PolicyStaticTier, PolicyLinTS, PolicyLinTSWait}})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			files, err := res.WritePlots(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"legit_throttle_rate.png", "abuse_served.png", "cumulative_reward.png", "cumulative_regret.png"}
			if !slices.Equal(files, want) {
				t.Fatalf("WritePlots wrote %v, want %v", files, want)
			}
			shade := overWhite(incidentShade[StaleModel])
			for _, f := range files {
				img := decodePlot(t, filepath.Join(dir, f))
				from, to := legendGap(t, img)
				w := img.Bounds().Dx()
				if n := countPixels(img, 0, from, func(c color.Color) bool { return !blank(c) }); n < 5000 {
					t.Errorf("%s: only %d pixels drawn left of the legend: the axes are missing", f, n)
				}
				var onAxes int
				for _, p := range res.Order {
					c := palette[p]
					if countPixels(img, to, w, func(x color.Color) bool { return near(x, c) }) == 0 {
						t.Errorf("%s: no %s swatch right of the axes", f, p)
					}
					onAxes += countPixels(img, 0, from, func(x color.Color) bool { return near(x, c) })
				}
				if onAxes == 0 {
					t.Errorf("%s: no policy's line drawn on the axes", f)
				}

				inLegend := countPixels(img, to, w, func(c color.Color) bool { return near(c, shade) })
				var cols []int
				for x := 0; x < from; x++ {
					if countPixels(img, x, x+1, func(c color.Color) bool { return near(c, shade) }) > 20 {
						cols = append(cols, x)
					}
				}
				if tc.staleAt == 0 {
					if inLegend > 0 || len(cols) > 0 {
						t.Errorf("%s: an incident after the run is shaded (%d columns) or named (%d pixels)", f, len(cols), inLegend)
					}
					continue
				}
				if inLegend == 0 {
					t.Errorf("%s: the stale-model incident is not named in the legend", f)
				}
				if len(cols) == 0 {
					t.Fatalf("%s: the stale-model incident is not shaded", f)
				}
				if span := cols[len(cols)-1] - cols[0] + 1; span != len(cols) {
					t.Errorf("%s: the shading of one incident is %d columns over a span of %d: not one band", f, len(cols), span)
				}
				if share := float64(len(cols)) / float64(from); share < tc.shadeMin || share > tc.shadeMax {
					t.Errorf("%s: one hour of four shades %.0f%% of the axes' side, want %.0f–%.0f%%",
						f, 100*share, 100*tc.shadeMin, 100*tc.shadeMax)
				}
			}
		})
	}
}

// The rate charts' log axis starts at the floor decade or the lowest
// rate's, ends at a whole decade, and spans at least one.
func TestPlotLogRange(t *testing.T) {
	const floor = 1e-4 // rateFloor in percent
	cases := map[string]struct {
		ys     []float64
		lo, hi float64
	}{
		"all zero, clamped to the floor": {ys: []float64{floor, floor}, lo: 1e-4, hi: 1e-3},
		"orders of magnitude":            {ys: []float64{floor, 0.03, 37}, lo: 1e-4, hi: 100},
		"no zero":                        {ys: []float64{0.2, 5}, lo: 0.1, hi: 10},
		"a whole decade stays":           {ys: []float64{0.01, 1}, lo: 0.01, hi: 1},
		"no points":                      {lo: 1e-4, hi: 1e-3},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pts := make(plotter.XYs, len(tc.ys))
			for i, y := range tc.ys {
				pts[i].X, pts[i].Y = float64(i), y
			}
			lo, hi := logRange([]plotter.XYs{pts}, floor)
			if math.Abs(lo/tc.lo-1) > 1e-9 || math.Abs(hi/tc.hi-1) > 1e-9 {
				t.Errorf("logRange = [%g, %g], want [%g, %g]", lo, hi, tc.lo, tc.hi)
			}
			if ticks := (logTicks{}).Ticks(lo, hi); ticks[0].Label == "" || math.Abs(ticks[0].Value/lo-1) > 1e-6 {
				t.Errorf("the first tick is %+v, want a labelled tick at %g", ticks[0], lo)
			}
		})
	}
}

// Every policy has a colour of its own, and lints' variants differ in
// dashes as well.
func TestPlotPolicyLines(t *testing.T) {
	seen := map[color.RGBA]string{}
	for _, p := range AllPolicies {
		c, ok := palette[p]
		if !ok {
			t.Errorf("%s has no colour", p)
			continue
		}
		if other, dup := seen[c]; dup {
			t.Errorf("%s and %s share the colour %v", p, other, c)
		}
		seen[c] = p
	}
	family := []string{PolicyLinTS, PolicyLinTSWait, PolicyEpsGreedy}
	for i, a := range family {
		for _, b := range family[i+1:] {
			if slices.Equal(policyLine(a).Dashes, policyLine(b).Dashes) {
				t.Errorf("%s and %s have the same dashes %v", a, b, policyLine(a).Dashes)
			}
		}
	}
}

// A bar's whisker is its interval, clamped to a fraction's [0, 1].
func TestPlotBarInterval(t *testing.T) {
	cases := map[string]struct {
		s                  Stat
		mean, below, above float64
	}{
		"one seed: no whisker":   {s: Stat{Mean: 0.2, Lo: 0.2, Hi: 0.2}, mean: 0.2},
		"interval":               {s: Stat{Mean: 0.2, Lo: 0.1, Hi: 0.35}, mean: 0.2, below: 0.1, above: 0.15},
		"negative lo clamped":    {s: Stat{Mean: 0.01, Lo: -0.02, Hi: 0.04}, mean: 0.01, below: 0.01, above: 0.03},
		"zero mean, negative lo": {s: Stat{Mean: 0, Lo: -0.001, Hi: 0.001}, above: 0.001},
		"hi past 1 clamped":      {s: Stat{Mean: 0.97, Lo: 0.85, Hi: 1.09}, mean: 0.97, below: 0.12, above: 0.03},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			mean, below, above := barInterval(tc.s)
			if math.Abs(mean-tc.mean) > 1e-12 || math.Abs(below-tc.below) > 1e-12 || math.Abs(above-tc.above) > 1e-12 {
				t.Errorf("barInterval = %g −%g +%g, want %g −%g +%g", mean, below, above, tc.mean, tc.below, tc.above)
			}
		})
	}
}

// A pack's bar charts: one per outcome per scenario, named after it, the
// legend outside the axes.
func TestPackWritePlots(t *testing.T) {
	res, err := RunPack(context.Background(), []*Scenario{shrink(smallScenario(t), 4*time.Hour)},
		PackOptions{Seeds: []uint64{1, 2}, Policies: []string{PolicyStaticTier, PolicyLinTS}, NoWall: true})
	if err != nil {
		t.Fatal(err)
	}
	// A scenario without abuse gets no abuse chart, and a name that is no
	// file name is made one; its bars are known, so both must show.
	res.Scenarios = append(res.Scenarios, ScenarioSummary{
		Scenario: "no/abuse", Seeds: []uint64{1, 2}, Order: []string{PolicyStaticP99, PolicyLinTS},
		Tiers: map[string]map[string]map[string]Stat{
			PolicyStaticP99: {"free": {"legit_throttled_fraction": {Mean: 0.3, Lo: 0.2, Hi: 0.4}}, "pro": {"legit_throttled_fraction": {Mean: 0.1, Lo: -0.05, Hi: 0.25}}},
			PolicyLinTS:     {"free": {"legit_throttled_fraction": {Mean: 0.02, Lo: 0.01, Hi: 0.03}}, "pro": {"legit_throttled_fraction": {Mean: 0.2, Lo: 0.2, Hi: 0.2}}},
		},
	})
	dir := t.TempDir()
	files, err := res.WritePlots(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pack-small-legit.png", "pack-small-abuse.png", "pack-no-abuse-legit.png"}
	if !slices.Equal(files, want) {
		t.Fatalf("WritePlots wrote %v, want %v", files, want)
	}
	scenarioOf := map[string]ScenarioSummary{files[0]: res.Scenarios[0], files[1]: res.Scenarios[0], files[2]: res.Scenarios[1]}
	for _, f := range files {
		img := decodePlot(t, filepath.Join(dir, f))
		from, to := legendGap(t, img)
		s := scenarioOf[f]
		for _, p := range s.Order {
			c := palette[p]
			if countPixels(img, to, img.Bounds().Dx(), func(x color.Color) bool { return near(x, c) }) == 0 {
				t.Errorf("%s: no %s swatch right of the axes", f, p)
			}
			if s.Scenario == "no/abuse" && countPixels(img, 0, from, func(x color.Color) bool { return near(x, c) }) < 100 {
				t.Errorf("%s: %s's bars are missing", f, p)
			}
		}
	}
}
