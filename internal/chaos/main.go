// Command chaos is flowguard's fault and load harness (`make chaos`). On
// one machine it runs three regions × two `flowguard serve` instances,
// each region with its own redis-server, one `flowguard learn`, and a
// Kafka-protocol broker (`flowguard dev kafka`), sends open-loop decide
// traffic and a stream of uniquely numbered labels, and kills and restores,
// one at a time: one Redis, the Kafka broker, a serving instance, the
// learner and a whole region. For each fault it prints requests answered,
// 5xx responses, p99 during the fault, time to fall back, whether every
// label was applied exactly once, and the admissions of a budgeted key
// hammered from all regions against its budget.
//
// The client plays the gateway's load balancer: a request an instance
// does not answer (connection refused) goes to the region's other
// instance, then to the next region.
//
// The Kafka fault freezes the broker (SIGSTOP, then SIGCONT): it stops
// answering, connections hang, nothing is lost. Killing `flowguard dev
// kafka` would also erase every topic (it keeps them in memory), which no
// replicated Kafka cluster does; see -kafka-kill.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	o := defaultOptions()
	flag.DurationVar(&o.Fault, "fault", o.Fault, "how long each fault lasts")
	flag.DurationVar(&o.Settle, "settle", o.Settle, "recovery time after each restore (counted with its fault)")
	flag.IntVar(&o.Rate, "rate", o.Rate, "decide requests per second over all regions (besides the budgeted key)")
	flag.IntVar(&o.HotRate, "hot-rate", o.HotRate, "requests per second of the budgeted key, over all regions")
	flag.StringVar(&o.Bin, "bin", "", "flowguard binary (default: go build ./cmd/flowguard into a temporary directory)")
	flag.StringVar(&o.Faults, "faults", o.Faults, "comma-separated faults to run, in order")
	flag.BoolVar(&o.Verbose, "v", false, "log progress to stderr")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	if !rep.OK() {
		os.Exit(1)
	}
}
