package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/serving"
	"github.com/redis/go-redis/v9"
)

// learn runs the learner of the scaled-out mode until SIGTERM.
func learn(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("learn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `FILE` with kafka: and redis: sections (required)")
	addr := fs.String("addr", "127.0.0.1:9465", "`HOST:PORT` for /metrics, /healthz and /readyz")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("learn: unexpected argument %q", fs.Arg(0))
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "usage: flowguard learn --config FILE [--addr HOST:PORT]")
		return errUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel(cfg.Server.LogLevel)}))
	redis.SetLogger(redisLogger{log})
	l, err := serving.NewLearner(cfg, serving.LearnerOptions{Logger: log, Addr: *addr})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return l.Run(ctx)
}
