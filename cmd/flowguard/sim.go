package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/sim"
)

const simUsage = "usage: flowguard sim wheel [--steps N] [--runs N] [--seed N] [--deltas D,…]\n"

func simCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "wheel" {
		fmt.Fprint(stderr, simUsage)
		return errUsage
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
