package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/topics"
	"github.com/devflow/flowguard/rewards"
	"github.com/segmentio/kafka-go"
)

const reportUsage = `usage: flowguard experiments report [--experiments FILE] (--file LOG | --brokers HOST:PORT,… [--topic T]) [--labels FILE] [--json]
`

// experimentsReport reads the decision log (a JSONL export or the Kafka
// topic from its start to its current end) and prints per-variant results,
// the SRM check and off-policy estimates.
func experimentsReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("experiments report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, reportUsage); fs.PrintDefaults() }
	expFile := fs.String("experiments", "", "experiments `FILE` the log was produced under (default: the embedded examples/experiments.yaml)")
	file := fs.String("file", "", "decision-log export `LOG`: JSON lines of decision and outcome records")
	brokers := fs.String("brokers", "", "Kafka `BROKERS` (comma-separated host:port) to read the decision log from")
	topic := fs.String("topic", topics.Decisions, "Kafka `TOPIC` of the decision log")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up reading Kafka after this long")
	labels := fs.String("labels", "", "labels export `FILE` (JSON lines, the flowguard.labels schema) for abuse rates and rewards")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 || (*file == "") == (*brokers == "") {
		fmt.Fprintln(stderr, "flowguard experiments report: give exactly one of --file or --brokers")
		fs.Usage()
		return errUsage
	}
	cfg, err := experiments.Default()
	if *expFile != "" {
		cfg, err = experiments.Load(*expFile)
	}
	if err != nil {
		return err
	}
	var opts experiments.ReportOptions
	if *labels != "" {
		f, err := os.Open(*labels)
		if err != nil {
			return fmt.Errorf("%s: cannot read: %w", *labels, unwrapPath(err))
		}
		opts.Labels, err = experiments.ReadLabels(*labels, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	var records []rewards.Record
	collect := func(r rewards.Record) error { records = append(records, r); return nil }
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("%s: cannot read: %w", *file, unwrapPath(err))
		}
		err = experiments.ReadLog(*file, f, collect)
		f.Close()
		if err != nil {
			return err
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		if err := readKafkaLog(ctx, strings.Split(*brokers, ","), *topic, collect); err != nil {
			return err
		}
	}
	rep, err := experiments.BuildReport(cfg, records, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(stdout)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readKafkaLog reads every partition of topic from its first offset to
// the end it had when the read began, with no consumer group (nothing is
// committed). Records that fail to parse are an error naming the
// partition and offset. Cancelling ctx stops the read with its error.
func readKafkaLog(ctx context.Context, brokers []string, topic string, fn func(rewards.Record) error) error {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("kafka %s: %w", brokers[0], err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return fmt.Errorf("kafka topic %s: %w", topic, err)
	}
	if len(parts) == 0 {
		return fmt.Errorf("kafka topic %s: no partitions", topic)
	}
	for _, p := range parts {
		if err := readPartition(ctx, brokers, topic, p.ID, fn); err != nil {
			return err
		}
	}
	return nil
}

func readPartition(ctx context.Context, brokers []string, topic string, partition int, fn func(rewards.Record) error) error {
	leader, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, partition)
	if err != nil {
		return fmt.Errorf("kafka %s/%d: %w", topic, partition, err)
	}
	first, last, err := leader.ReadOffsets()
	leader.Close()
	if err != nil {
		return fmt.Errorf("kafka %s/%d: offsets: %w", topic, partition, err)
	}
	if last <= first {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return fmt.Errorf("kafka %s/%d: %w", topic, partition, err)
	}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("kafka %s/%d: reading offset ≥ %d of %d: %w", topic, partition, first, last, err)
		}
		rec, err := rewards.ParseRecord(m.Value)
		if err != nil {
			return fmt.Errorf("kafka %s/%d@%d: %w", topic, partition, m.Offset, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
		if m.Offset >= last-1 {
			return nil
		}
	}
}
