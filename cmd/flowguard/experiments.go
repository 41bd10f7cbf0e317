package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/devflow/flowguard/experiments"
)

const experimentsUsage = `usage: flowguard experiments validate [--config FILE] FILE
       flowguard experiments assign [--file FILE] [--tenant T] [--tier TIER] [--region R] [--state STOPS] KEY
       flowguard experiments resume --state STOPS [--reason TEXT] EXPERIMENT/VARIANT
       flowguard experiments report [--experiments FILE] (--file LOG | --brokers HOST:PORT,… [--topic T]) [--labels FILE] [--json]
`

// experimentsCmd checks an experiments file, shows where a key lands,
// resumes a stopped variant, or reports on the decision log.
func experimentsCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, experimentsUsage)
		return errUsage
	}
	switch args[0] {
	case "validate":
		return experimentsValidate(args[1:], stdout, stderr)
	case "assign":
		return experimentsAssign(args[1:], stdout, stderr)
	case "resume":
		return experimentsResume(args[1:], stdout, stderr)
	case "report":
		return experimentsReport(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, experimentsUsage)
		return nil
	}
	fmt.Fprint(stderr, experimentsUsage)
	return errUsage
}

// parseInterleaved parses flags given before and after positional
// arguments (KEY --tier free), and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func experimentsValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("experiments validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, experimentsUsage); fs.PrintDefaults() }
	conf := fs.String("config", "", "configuration `FILE` whose ml: section decides which bandit variants have a model of their own, and whose policies' tiers the targeting must name (default: the embedded default's ml:, tiers unchecked)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	cfg, err := experiments.Load(pos[0])
	if err != nil {
		return err
	}
	loaded, err := loadConfig(*conf)
	if err != nil {
		return err
	}
	if *conf != "" {
		// Targeted tiers must be ones that configuration's policies define.
		if err := cfg.ResolveTiers(loaded.Policies); err != nil {
			return err
		}
	}
	variants := 0
	for _, e := range cfg.Experiments {
		variants += len(e.Variants)
	}
	fmt.Fprintf(stdout, "%s: ok (%d experiments, %d variants)\n", cfg.Name, len(cfg.Experiments), variants)
	// Which model each bandit and shadow variant draws from, under ml:.
	ml := loaded.ML
	keys := map[string]string{}
	for _, vm := range ml.VariantModels(cfg) {
		keys[vm.ID] = vm.Key()
	}
	for _, e := range cfg.Experiments {
		for _, v := range e.Variants {
			id := e.Name + "/" + v.Name
			switch {
			case v.Policy == experiments.PolicyStatic:
			case keys[id] != "":
				fmt.Fprintf(stdout, "  %s: %s, own model %s (%s)\n", id, v.Policy, keys[id], ml.OwnModelReason(v.Bandit))
			case v.Policy == experiments.PolicyShadow && ml.OwnModel(v.Bandit):
				fmt.Fprintf(stdout, "  %s: %s, main model (a shadow variant cannot have its own: %s)\n", id, v.Policy, ml.OwnModelReason(v.Bandit))
			default:
				fmt.Fprintf(stdout, "  %s: %s, main model\n", id, v.Policy)
			}
		}
	}
	return nil
}

func experimentsAssign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("experiments assign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, experimentsUsage); fs.PrintDefaults() }
	file := fs.String("file", "", "experiments `FILE` (default: the embedded examples/experiments.yaml)")
	var u experiments.Unit
	fs.StringVar(&u.Tenant, "tenant", "", "the key's `TENANT`")
	fs.StringVar(&u.Tier, "tier", "", "the tenant's `TIER`, as the policy file names it (any case)")
	fs.StringVar(&u.Region, "region", "", "the request's `REGION`")
	state := fs.String("state", "", "stop log `FILE` whose stopped variants to apply")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	u.Key = pos[0]
	cfg, err := experiments.Default()
	if *file != "" {
		cfg, err = experiments.Load(*file)
	}
	if err != nil {
		return err
	}
	a, err := experiments.NewAssigner(cfg)
	if err != nil {
		return err
	}
	if *state != "" {
		stops, err := experiments.LoadStops(*state)
		if err != nil {
			return err
		}
		if err := a.ApplyStops(stops.Active()); err != nil {
			fmt.Fprintf(stderr, "flowguard: %s: %v (ignored)\n", *state, err)
		}
	}
	all := a.Assign(u)
	if len(all) == 0 {
		if p, _ := a.Primary(u); p.Holdout {
			fmt.Fprintf(stdout, "%s: held out of every experiment\n", u.Key)
		} else {
			fmt.Fprintf(stdout, "%s: in no experiment\n", u.Key)
		}
		return nil
	}
	for i, as := range all {
		policy := string(as.Policy)
		if as.Stopped {
			policy += " (variant stopped)"
		}
		role := ""
		if i == 0 {
			role = ", decides the budget"
		}
		fmt.Fprintf(stdout, "%s: %s/%s, policy %s, bucket %d%s\n", u.Key, as.Experiment, as.Variant, policy, as.Bucket, role)
	}
	return nil
}

func experimentsResume(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("experiments resume", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, experimentsUsage); fs.PrintDefaults() }
	state := fs.String("state", "", "the stop log `FILE` (required)")
	reason := fs.String("reason", "", "why, for the record")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *state == "" {
		fs.Usage()
		return errUsage
	}
	exp, variant, ok := strings.Cut(pos[0], "/")
	if !ok {
		return fmt.Errorf("resume: %q is not EXPERIMENT/VARIANT", pos[0])
	}
	stops, err := experiments.LoadStops(*state)
	if err != nil {
		return err
	}
	defer stops.Close()
	err = stops.Append(experiments.StopRecord{
		Op: experiments.OpResume, Experiment: exp, Variant: variant,
		Reason: *reason, Time: time.Now().UTC(),
	})
	if errors.Is(err, experiments.ErrNotStopped) {
		return fmt.Errorf("%s: %s/%s is not stopped", *state, exp, variant)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s/%s resumed: recorded in %s\n", exp, variant, *state)
	return stops.Close()
}
