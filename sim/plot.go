package sim

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// palette gives each policy the same colour in every plot (the tab10
// colours, one each).
var palette = map[string]color.RGBA{
	PolicyStaticP99:     {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	PolicyStaticP99Tier: {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	PolicyStaticTier:    {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	PolicyFloor:         {R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
	PolicyCeiling:       {R: 0xbc, G: 0xbd, B: 0x22, A: 0xff},
	PolicyLinTS:         {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	PolicyLinTSWait:     {R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	PolicyEpsGreedy:     {R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	PolicyOracle:        {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// dashes tell lints' variants apart by more than a shade of blue, in
// print and for readers who do not see the colours.
var dashes = map[string][]vg.Length{
	PolicyLinTSWait: {vg.Points(6), vg.Points(3)},
	PolicyEpsGreedy: {vg.Points(6), vg.Points(2), vg.Points(1.5), vg.Points(2)},
}

// policyLine is how a policy's line is drawn in every chart.
func policyLine(name string) draw.LineStyle {
	c, ok := palette[name]
	if !ok {
		c = color.RGBA{A: 0xff}
	}
	return draw.LineStyle{Color: c, Width: vg.Points(1.5), Dashes: dashes[name]}
}

// incidentShade fills an incident's window: pale enough that the lines
// over it stay readable.
var incidentShade = map[string]color.NRGBA{
	RedisOutage:  {R: 0xe4, G: 0x1a, B: 0x1c, A: 0x33},
	KafkaOutage:  {R: 0xff, G: 0x7f, B: 0x00, A: 0x33},
	StaleModel:   {R: 0x98, G: 0x4e, B: 0xa3, A: 0x33},
	RegionOutage: {R: 0x37, G: 0x7e, B: 0xb8, A: 0x33},
	FlashCrowd:   {R: 0x4d, G: 0xaf, B: 0x4a, A: 0x33},
}

// rateFloor is where the log-scale rate charts draw a zero rate (a
// fraction): a log axis has no 0.
const rateFloor = 1e-6

// plotW and plotH are every chart's size: 768×432 pixels at vgimg's
// 96 dpi.
const (
	plotW = 8 * vg.Inch
	plotH = 4.5 * vg.Inch
)

// WritePlots draws the legitimate throttle rate, the abuse served, and the
// cumulative reward and regret against the oracle over time, one line per
// policy, as PNG files in dir. It returns the file names.
//
// The two rates are drawn on a log scale, with zeros at rateFloor; the
// scenario's incidents are shaded, one colour per kind; the legend is
// drawn to the right of the axes.
func (r *Results) WritePlots(dir string) ([]string, error) {
	hours := r.Epoch.Hours() * float64(r.BucketEpochs)
	floorLabel := fmt.Sprintf("log scale, 0 drawn at %s%%", strconv.FormatFloat(100*rateFloor, 'g', -1, 64))
	charts := []struct {
		file, title, y string
		get            func(*Series) []float64
		scale          float64
		log            bool
	}{
		{"legit_throttle_rate.png", "Legitimate requests throttled", "% of legitimate requests (" + floorLabel + ")", func(s *Series) []float64 { return s.LegitThrottleRate }, 100, true},
		{"abuse_served.png", "Abusive requests served", "% of abusive requests (" + floorLabel + ")", func(s *Series) []float64 { return s.AbuseServed }, 100, true},
		{"cumulative_reward.png", "Cumulative reward", "reward", func(s *Series) []float64 { return s.CumReward }, 1, false},
		{"cumulative_regret.png", "Cumulative regret vs oracle", "oracle reward − policy reward", func(s *Series) []float64 { return s.CumRegret }, 1, false},
	}
	var files []string
	for _, c := range charts {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s — %s", c.title, r.Scenario)
		p.X.Label.Text = "hours from the start"
		p.Y.Label.Text = c.y

		var end float64
		lines := make([]plotter.XYs, len(r.Order))
		for j, name := range r.Order {
			var ys []float64
			if s := r.Series[name]; s != nil {
				ys = c.get(s)
			}
			pts := make(plotter.XYs, len(ys))
			for i, v := range ys {
				if c.log {
					v = math.Max(v, rateFloor)
				}
				pts[i].X, pts[i].Y = float64(i+1)*hours, v*c.scale
			}
			lines[j] = pts
			end = math.Max(end, float64(len(ys))*hours)
		}
		lo, hi := linearRange(lines)
		if c.log {
			lo, hi = logRange(lines, rateFloor*c.scale)
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = logTicks{}
		}

		if err := r.shadeIncidents(p, end, lo, hi); err != nil {
			return nil, fmt.Errorf("sim: plot %s: %w", c.file, err)
		}
		p.Add(plotter.NewGrid())
		for j, name := range r.Order {
			l, err := plotter.NewLine(lines[j])
			if err != nil {
				return nil, fmt.Errorf("sim: plot %s: %w", c.file, err)
			}
			l.LineStyle = policyLine(name)
			p.Add(l)
			p.Legend.Add(name, l)
		}
		p.X.Min, p.X.Max = 0, math.Max(end, hours)
		p.Y.Min, p.Y.Max = lo, hi
		if err := savePlot(p, filepath.Join(dir, c.file)); err != nil {
			return nil, fmt.Errorf("sim: plot %s: %w", c.file, err)
		}
		files = append(files, c.file)
	}
	return files, nil
}

// shadeIncidents adds a translucent band over [lo, hi] for each incident
// of the scenario that overlaps [0, end] hours, and names each kind once
// in the legend. Results built without a scenario have none.
func (r *Results) shadeIncidents(p *plot.Plot, end, lo, hi float64) error {
	if r.scenario == nil {
		return nil
	}
	var kinds []string
	rings := map[string][]plotter.XYer{}
	for _, in := range r.scenario.Incidents {
		from := math.Max(in.At.Hours(), 0)
		to := math.Min((in.At + in.Duration).Hours(), end)
		if to <= from {
			continue
		}
		if _, seen := rings[in.Kind]; !seen {
			kinds = append(kinds, in.Kind)
		}
		rings[in.Kind] = append(rings[in.Kind], plotter.XYs{{X: from, Y: lo}, {X: to, Y: lo}, {X: to, Y: hi}, {X: from, Y: hi}})
	}
	for _, kind := range kinds {
		poly, err := plotter.NewPolygon(rings[kind]...)
		if err != nil {
			return err
		}
		shade, ok := incidentShade[kind]
		if !ok {
			shade = color.NRGBA{R: 0x80, G: 0x80, B: 0x80, A: 0x33}
		}
		poly.Color = shade
		poly.LineStyle.Width = 0
		p.Add(poly)
		p.Legend.Add("incident: "+kind, poly)
	}
	return nil
}

// linearRange is the y range of lines, widened when it is a single value
// so that shading over it has a height.
func linearRange(lines []plotter.XYs) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, pt := range l {
			lo, hi = math.Min(lo, pt.Y), math.Max(hi, pt.Y)
		}
	}
	if lo > hi {
		return 0, 1
	}
	if lo == hi {
		return lo - 1, hi + 1
	}
	return lo, hi
}

// logRange is the y range of lines, out to whole decades so that both
// ends carry a labelled tick, and never below floor; it spans at least a
// decade.
func logRange(lines []plotter.XYs, floor float64) (lo, hi float64) {
	lo, hi = math.Inf(1), floor
	for _, l := range lines {
		for _, pt := range l {
			lo, hi = math.Min(lo, pt.Y), math.Max(hi, pt.Y)
		}
	}
	lo = math.Max(math.Min(lo, hi), floor)
	lo = math.Pow(10, math.Floor(math.Log10(lo)+1e-9))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)-1e-9))
	if hi <= lo {
		hi = 10 * lo
	}
	return lo, hi
}

// logTicks are plot.LogTicks that keep the bottom decade: LogTicks
// truncates log10 of the axis minimum toward zero, so a minimum of
// 10^−4 that rounds to 10^−3.99… would lose its tick.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	return plot.LogTicks{Prec: -1}.Ticks(lo*(1-1e-9), hi)
}

// legendPad is the blank between the axes and the legend, and around the
// legend.
var legendPad = vg.Points(12)

// savePlot writes p as a plotW×plotH PNG to file, with its legend in a
// strip to the right of the axes so that no entry hides the data.
func savePlot(p *plot.Plot, file string) error {
	img := vgimg.New(plotW, plotH)
	c := draw.New(img)

	orig := p.Legend
	legend := orig
	legend.Top, legend.Left = true, true
	p.Legend = plot.NewLegend() // an empty one inside the axes; p's is drawn below
	defer func() { p.Legend = orig }()

	strip := legend.Rectangle(c).Size().X + 2*legendPad

	// gonum makes room for the y label as if it sat at the arithmetic
	// middle of the range, which on a log axis is near the top, and
	// squeezes the data to fit it: draw it beside the axes instead.
	label := p.Y.Label
	var left vg.Length
	if label.Text != "" {
		p.Y.Label.Text = ""
		defer func() { p.Y.Label.Text = label.Text }()
		left = label.TextStyle.Height(label.Text) + label.TextStyle.FontExtents().Descent + label.Padding
	}
	axes := draw.Crop(c, left, -strip, 0, 0)
	p.Draw(axes)
	if left > 0 {
		sty := label.TextStyle
		sty.Rotation += math.Pi / 2
		x := c.Min.X + label.TextStyle.Height(label.Text) - sty.FontExtents().Descent
		data := p.DataCanvas(axes)
		c.FillText(sty, vg.Point{X: x, Y: data.Center().Y}, label.Text)
	}
	top := legendPad
	if p.Title.Text != "" {
		top += p.Title.TextStyle.Rectangle(p.Title.Text).Size().Y + p.Title.Padding
	}
	legend.Draw(draw.Crop(c, plotW-strip+legendPad, -legendPad, legendPad, -top))

	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
