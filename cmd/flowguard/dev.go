package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/devflow/flowguard/internal/devkafka"
)

const devUsage = "usage: flowguard dev kafka [--listen HOST:PORT]\n"

// devCmd runs a local broker speaking the Kafka protocol, with flowguard's
// topics, until interrupted.
func devCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "kafka" {
		fmt.Fprint(stderr, devUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("dev kafka", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "address to listen on")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dev kafka: unexpected argument %q", fs.Arg(0))
	}
	c, err := devkafka.Start(*listen, devkafka.DefaultTopics())
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stdout, "kafka protocol on %s (in memory, for development); topics:\n", c.Addrs()[0])
	for _, t := range devkafka.DefaultTopics() {
		compact := ""
		if t.Compacted {
			compact = ", compacted"
		}
		fmt.Fprintf(stdout, "  %s (%d partitions%s)\n", t.Name, t.Partitions, compact)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
