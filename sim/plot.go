package sim

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// palette gives each policy the same colour in every plot.
var palette = map[string]color.RGBA{
	PolicyStaticP99:  {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	PolicyStaticTier: {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	PolicyLinTS:      {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	PolicyLinTSWait:  {R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	PolicyEpsGreedy:  {R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	PolicyOracle:     {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// WritePlots draws the legitimate throttle rate, the abuse served, and the
// cumulative reward and regret against the oracle over time, one line per
// policy, as PNG files in dir. It returns the file names.
func (r *Results) WritePlots(dir string) ([]string, error) {
	hours := r.Epoch.Hours() * float64(r.BucketEpochs)
	charts := []struct {
		file, title, y string
		get            func(*Series) []float64
		scale          float64
	}{
		{"legit_throttle_rate.png", "Legitimate requests throttled", "% of legitimate requests", func(s *Series) []float64 { return s.LegitThrottleRate }, 100},
		{"abuse_served.png", "Abusive requests served", "% of abusive requests", func(s *Series) []float64 { return s.AbuseServed }, 100},
		{"cumulative_reward.png", "Cumulative reward", "reward", func(s *Series) []float64 { return s.CumReward }, 1},
		{"cumulative_regret.png", "Cumulative regret vs oracle", "oracle reward − policy reward", func(s *Series) []float64 { return s.CumRegret }, 1},
	}
	var files []string
	for _, c := range charts {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s — %s", c.title, r.Scenario)
		p.X.Label.Text = "hours"
		p.Y.Label.Text = c.y
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
		for _, name := range r.Order {
			ys := c.get(r.Series[name])
			pts := make(plotter.XYs, len(ys))
			for i, v := range ys {
				pts[i].X, pts[i].Y = float64(i+1)*hours, v*c.scale
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return nil, fmt.Errorf("sim: plot %s: %w", c.file, err)
			}
			l.Color = palette[name]
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(name, l)
		}
		if err := p.Save(8*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, c.file)); err != nil {
			return nil, fmt.Errorf("sim: plot %s: %w", c.file, err)
		}
		files = append(files, c.file)
	}
	return files, nil
}
