// Command flowguard is the adaptive rate-limiting decision service. This
// file only parses flags, loads configuration and runs a subcommand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/serving"
	"github.com/redis/go-redis/v9"
)

const usage = `flowguard — adaptive rate limiting for a public API

Usage:
  flowguard serve [--config FILE] [--addr HOST:PORT]   run the decision service (no config = embedded default)
  flowguard learn --config FILE [--addr HOST:PORT]     the learner of the scaled-out mode (needs kafka: and redis:)
  flowguard config validate FILE                       check a configuration file
  flowguard audit verify [--head HASH] FILE            check an audit log's hash chain
  flowguard arms validate FILE                         check a bandit arms file
  flowguard sim --scenario FILE --out DIR [--policies A,B,…] [--seed N]
                                                       compare policies offline on a scenario (default, small: embedded)
  flowguard sim --trace ACCESS_LOG [--out DIR] [--policies A,B,…]
                                                       replay a real access log through the pipeline
  flowguard sim wheel [--steps N] [--runs N] [--seed N] [--deltas D,…]
                                                       the wheel bandit benchmark (Riquelme et al. 2018)
  flowguard quotas fit (--usage SRC | --access-log FILE) --until DATE …
                                                       fit static per-endpoint quotas as policy YAML
  flowguard quotas backtest (--usage SRC | --access-log FILE) --train-until DATE --test-until DATE …
                                                       count what fitted quotas would have rate-limited (exit 3: alert)
  flowguard experiments validate [--config FILE] FILE  check an experiments file
  flowguard experiments assign [--file FILE] … KEY     show a key's experiment and variant
  flowguard experiments resume --state STOPS EXPERIMENT/VARIANT
                                                       resume a variant a guardrail stopped
  flowguard experiments report (--file LOG | --brokers HOST:PORT,…) …
                                                       per-variant results, SRM and off-policy estimates from the decision log
  flowguard import envoy-ratelimit [--out FILE] [--key K=MEANING]… FILE
                                                       convert an envoyproxy/ratelimit configuration into policies
  flowguard dev kafka [--listen HOST:PORT]             a local Kafka-protocol broker with flowguard's topics
  flowguard version                                    print the version (also: flowguard --version)

Run 'flowguard COMMAND --help' for a command's flags.
`

// version is set at link time (go build -ldflags "-X main.version=…");
// when it is not, versionString reads the module version the go command
// stamped into the binary.
var version = ""

// versionString is what version and --version print: the link-time
// version, else the main module's version from the build information (a
// tag, or a pseudo-version for a build from a git checkout), else "dev"
// (go run).
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "learn":
		err = learn(args[1:], stderr)
	case "config":
		err = configCmd(args[1:], stdout, stderr)
	case "audit":
		err = auditCmd(args[1:], stdout, stderr)
	case "arms":
		err = armsCmd(args[1:], stdout, stderr)
	case "sim":
		err = simCmd(args[1:], stdout, stderr)
	case "quotas":
		err = quotasCmd(args[1:], stdout, stderr)
	case "experiments":
		err = experimentsCmd(args[1:], stdout, stderr)
	case "import":
		err = importCmd(args[1:], stdout, stderr)
	case "dev":
		err = devCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "flowguard", versionString())
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "flowguard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errAlert): // the ALERT lines are printed
		return 3
	default:
		fmt.Fprintln(stderr, "flowguard:", err)
		return 1
	}
}

// errUsage means the flag package already printed what was wrong.
var errUsage = errors.New("usage")

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `FILE` (default: the embedded examples/policies.yaml)")
	addr := fs.String("addr", "", "listen address `HOST:PORT`, overriding server.addr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel(cfg.Server.LogLevel)}))
	// go-redis logs through a process-wide hook: the process sets it, the
	// library does not.
	redis.SetLogger(redisLogger{log})
	if limit, set := memoryLimit(cfg.ML.MemoryBudgetMB); set {
		log.Info("Go soft memory limit from ml.memory_budget_mb", "bytes", limit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv, err := serving.New(cfg, serving.Options{Logger: log, Addr: *addr, Reloads: reloadSignals(ctx)})
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Run(ctx)
}

// memoryOverheadMB is what serve needs besides per-key state: the
// runtime, buffers, explain's recent decisions (at most 65,536 keys), the
// learner's queue.
const memoryOverheadMB = 512

// memoryLimit sets the Go runtime's soft memory limit to the per-key
// budget plus memoryOverheadMB, so that the collector works harder rather
// than let the heap's growth take the process past its budget; it leaves
// a GOMEMLIMIT the operator set alone. It returns the limit and whether
// it set it.
func memoryLimit(budgetMB int) (int64, bool) {
	if os.Getenv("GOMEMLIMIT") != "" || budgetMB <= 0 {
		return 0, false
	}
	limit := int64(budgetMB+memoryOverheadMB) << 20
	debug.SetMemoryLimit(limit)
	return limit, true
}

// reloadSignals turns each SIGHUP into a reload request until ctx ends.
func reloadSignals(ctx context.Context) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case out <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	}()
	return out
}

// redisLogger sends go-redis's messages (mostly failed dials during an
// outage, one per attempt) to slog at debug level: the outage itself is
// logged once, by the readiness check, and counted in metrics.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, args ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, args...), "component", "redis")
}

func configCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprint(stderr, "usage: flowguard config validate FILE\n")
		return errUsage
	}
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, "usage: flowguard config validate FILE\n") }
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	limiter := "in-memory limiter"
	if cfg.Redis != nil {
		limiter = "redis limiter"
	}
	fmt.Fprintf(stdout, "%s: ok (%d tiers, %s, digest %s)\n", cfg.Name, len(cfg.Policies.Tiers()), limiter, cfg.Digest)
	return nil
}

func loadConfig(path string) (*config.Loaded, error) {
	if path == "" {
		return config.Default()
	}
	return config.Load(path)
}

func logLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}
