package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/devflow/flowguard/serving"
)

const auditUsage = "usage: flowguard audit verify [--head HASH] FILE\n"

// auditCmd checks an audit log's hash chain. With --head it also checks
// that the log ends at the given hash, which detects a cut-off tail.
func auditCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(stderr, auditUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	head := fs.String("head", "", "the `HASH` the log must end at (the service logs it when it closes the log)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, auditUsage)
		return errUsage
	}
	sum, err := serving.VerifyAuditFile(fs.Arg(0))
	if err != nil {
		return err
	}
	if *head != "" && *head != sum.Head {
		return fmt.Errorf("%s: the chain is intact but ends at %s, not %s: records were cut off the end", fs.Arg(0), sum.Head, *head)
	}
	fmt.Fprintf(stdout, "%s: ok (%d records, head %s)\n", fs.Arg(0), sum.Records, sum.Head)
	return nil
}
