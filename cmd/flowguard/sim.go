package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/examples"
	"github.com/devflow/flowguard/sim"
)

const simUsage = `usage: flowguard sim wheel [--steps N] [--runs N] [--seed N] [--deltas D,…]
       flowguard sim --scenario FILE --policies A,B,… [--seed N] --out DIR
       flowguard sim --scenario FILE|DIR [--scenario …] --seeds 1..N [--policies A,B,…] --out DIR
       flowguard sim --trace ACCESS_LOG [--policies A,B,…] [--seed N] [--out DIR]
With --seeds, or a directory, or more than one --scenario: every scenario runs with every seed,
and DIR/pack.md holds one table, scenario × policy × outcome, each a mean with its 95% interval.
`

func simCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "wheel" {
		return simRun(args, stdout, stderr)
	}
	fs := flag.NewFlagSet("sim wheel", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg sim.WheelConfig
	fs.IntVar(&cfg.Steps, "steps", 2000, "contexts per run")
	fs.IntVar(&cfg.Runs, "runs", 10, "independent runs per δ, averaged")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the first run")
	deltas := fs.String("deltas", "0.5,0.7,0.9,0.95,0.99", "comma-separated radii δ in (0, 1)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim wheel: unexpected argument %q", fs.Arg(0))
	}
	for _, f := range strings.Split(*deltas, ",") {
		d, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("sim wheel: --deltas: %q is not a number", f)
		}
		cfg.Deltas = append(cfg.Deltas, d)
	}
	rows, err := sim.RunWheel(cfg)
	if err != nil {
		return err
	}
	return sim.WriteWheelTable(stdout, cfg, rows)
}

func armsCmd(args []string, stdout, stderr io.Writer) error {
	const u = "usage: flowguard arms validate FILE\n"
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprint(stderr, u)
		return errUsage
	}
	fs := flag.NewFlagSet("arms validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, u) }
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	arms, err := bandit.ParseArms(fs.Arg(0), data)
	if err != nil {
		return err
	}
	names := make([]string, len(arms))
	for i, a := range arms {
		names[i] = a.Name
	}
	fmt.Fprintf(stdout, "%s: ok (%d arms: %s)\n", fs.Arg(0), len(arms), strings.Join(names, " "))
	return nil
}

// simRun is `flowguard sim --scenario FILE …` and `flowguard sim --trace FILE …`.
func simRun(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, simUsage)
		fs.PrintDefaults()
	}
	var scenarios stringList
	fs.Var(&scenarios, "scenario", "scenario `FILE` (YAML), default or small for the embedded examples/scenarios, or a directory of them; repeatable")
	seedsFlag := fs.String("seeds", "", "seeds to run each scenario with: `1..N` or a comma-separated list; gives means and 95% intervals")
	trace := fs.String("trace", "", "replay a combined-format access `LOG` instead of a scenario")
	policies := fs.String("policies", "", "comma-separated policies: "+strings.Join(sim.AllPolicies, ", ")+" (default: all; with --trace: static-tier,lints)")
	seed := fs.Uint64("seed", 1, "seed of the traffic, labels and every policy's draws")
	out := fs.String("out", "", "output `DIR` for results.json, details.json, report.md and the plots")
	workers := fs.Int("workers", 0, "goroutines per policy run (default GOMAXPROCS); changes speed, never results")
	epoch := fs.Duration("epoch", time.Minute, "with --trace: the key-epoch length")
	noWall := fs.Bool("no-wall", false, "write wall_s as 0, so that two runs of one seed are byte-identical")
	usageCSV := fs.Bool("usage-csv", false, "also write DIR/usage-<policy>.csv: the daily usage each static-p99 policy fitted on, for flowguard quotas")
	progress := fs.String("progress", "auto", "progress bar on stderr: auto (when stderr is a terminal), on or off")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim: unexpected argument %q", fs.Arg(0))
	}
	if (len(scenarios) == 0) == (*trace == "") {
		fs.Usage()
		return errUsage
	}
	var names []string
	if *policies != "" {
		for _, p := range strings.Split(*policies, ",") {
			names = append(names, strings.TrimSpace(p))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	bar, err := newProgressBar(*progress, stderr)
	if err != nil {
		return err
	}
	if *trace != "" {
		if len(names) == 0 {
			names = []string{sim.PolicyStaticTier, sim.PolicyLinTS}
		}
		rep, err := sim.ReplayTrace(ctx, *trace, sim.TraceOptions{Seed: *seed, Policies: names, Epoch: *epoch,
			Workers: *workers, Progress: bar.update})
		bar.done()
		if err != nil {
			return err
		}
		if *out != "" {
			if err := rep.WriteDir(*out); err != nil {
				return err
			}
		}
		return rep.WriteText(stdout)
	}
	if *out == "" {
		fs.Usage()
		return errUsage
	}
	if len(names) == 0 {
		names = sim.AllPolicies
	}
	var files []string
	for _, f := range scenarios {
		if st, err := os.Stat(f); err == nil && st.IsDir() {
			m, _ := filepath.Glob(filepath.Join(f, "*.yaml"))
			if len(m) == 0 {
				return fmt.Errorf("sim: %s: no *.yaml scenario in the directory", f)
			}
			files = append(files, m...)
			continue
		}
		files = append(files, f)
	}
	if *seedsFlag != "" || len(files) > 1 {
		seeds := []uint64{*seed}
		if *seedsFlag != "" {
			if seeds, err = parseSeeds(*seedsFlag); err != nil {
				return err
			}
		}
		var pack []*sim.Scenario
		for _, f := range files {
			s, err := loadScenario(f)
			if err != nil {
				return err
			}
			pack = append(pack, s)
		}
		res, err := sim.RunPack(ctx, pack, sim.PackOptions{Seeds: seeds, Policies: names, Workers: *workers,
			Progress: bar.update, Out: *out, NoWall: *noWall})
		bar.done()
		if err != nil {
			return err
		}
		return writePack(res, *out, stdout)
	}
	s, err := loadScenario(files[0])
	if err != nil {
		return err
	}
	res, err := sim.Run(ctx, s, sim.Options{Seed: *seed, Policies: names, Workers: *workers, Progress: bar.update, KeepUsage: *usageCSV})
	bar.done()
	if err != nil {
		return err
	}
	if *noWall {
		for name, p := range res.Policies {
			p.WallS = 0
			res.Policies[name] = p
		}
	}
	if err := res.WriteDir(*out); err != nil {
		return err
	}
	for _, p := range res.UsagePolicies() {
		if err := writeFileWith(filepath.Join(*out, "usage-"+p+".csv"), func(w io.Writer) error { return res.WriteUsageCSV(p, w) }); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s: %d keys, %d epochs of %v, seed %d → %s\n", s.Name, s.Keys(), s.Epochs(), s.Epoch, *seed, *out)
	return res.WriteReport(stdout, nil)
}

// writePack writes pack.md (the table, then per tier) and pack.json into
// dir, and the table to stdout.
func writePack(res *sim.PackResult, dir string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md bytes.Buffer
	if err := res.WriteTable(&md); err != nil {
		return err
	}
	md.WriteString("\n## Per tier\n\n")
	if err := res.WriteTierTable(&md); err != nil {
		return err
	}
	plots, err := res.WritePlots(dir)
	if err != nil {
		return err
	}
	if len(plots) > 0 {
		md.WriteString("\n## Plots\n\nPer scenario and tier, each policy's mean with its 95% interval.\n\n")
		for _, p := range plots {
			fmt.Fprintf(&md, "![%s](%s)\n", strings.TrimSuffix(p, ".png"), p)
		}
	}
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pack.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pack.json"), js.Bytes(), 0o644); err != nil {
		return err
	}
	if err := res.WriteTable(stdout); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "\n→ %s (pack.md, pack.json, and each run under <scenario>/seed-N/)\n", dir)
	return err
}

func writeFileWith(path string, write func(io.Writer) error) error {
	var b bytes.Buffer
	if err := write(&b); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// parseSeeds reads --seeds: "1..N", "A..B" or "1,2,5".
func parseSeeds(v string) ([]uint64, error) {
	bad := fmt.Errorf("sim: --seeds %q: want 1..N or a comma-separated list of seeds", v)
	if a, b, ok := strings.Cut(v, ".."); ok {
		lo, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
		hi, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
		if err1 != nil || err2 != nil || hi < lo || hi-lo >= 1000 {
			return nil, bad
		}
		var out []uint64
		for s := lo; s <= hi; s++ {
			out = append(out, s)
		}
		return out, nil
	}
	var out []uint64
	for _, f := range strings.Split(v, ",") {
		s, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
		if err != nil || slices.Contains(out, s) {
			return nil, bad
		}
		out = append(out, s)
	}
	return out, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// loadScenario reads a scenario file; a name that is not a file but an
// embedded example (default, small) loads that.
func loadScenario(path string) (*sim.Scenario, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !strings.ContainsAny(path, "/\\") {
		name := strings.TrimSuffix(path, ".yaml") + ".yaml"
		if b, e := examples.Scenarios.ReadFile("scenarios/" + name); e == nil {
			return sim.ParseScenario("examples/scenarios/"+name+" (embedded)", b)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	return sim.ParseScenario(path, data)
}

// progressBar draws on stderr, only when asked or when it is a terminal.
type progressBar struct {
	w     io.Writer
	last  time.Time
	shown bool
}

func newProgressBar(mode string, w io.Writer) (*progressBar, error) {
	switch mode {
	case "on":
		return &progressBar{w: w}, nil
	case "off":
		return &progressBar{}, nil
	case "auto":
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				return &progressBar{w: w}, nil
			}
		}
		return &progressBar{}, nil
	}
	return nil, fmt.Errorf("sim: --progress %q, want auto, on or off", mode)
}

func (p *progressBar) update(done, total int64) {
	if p == nil || p.w == nil || total <= 0 {
		return
	}
	now := time.Now()
	if done < total && now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = now, true
	const width = 40
	n := int(width * done / total)
	fmt.Fprintf(p.w, "\r[%s%s] %5.1f%% %d/%d key-epochs", strings.Repeat("=", n), strings.Repeat(" ", width-n),
		100*float64(done)/float64(total), done, total)
}

func (p *progressBar) done() {
	if p != nil && p.shown {
		fmt.Fprintln(p.w)
	}
}
