package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/devflow/flowguard/internal/envoyimport"
)

const importUsage = `usage: flowguard import envoy-ratelimit [--out FILE] [--key ENVOY_KEY=MEANING]… FILE
Converts an envoyproxy/ratelimit configuration into flowguard policies (stdout, or --out FILE).
MEANING is one of api_key, tenant, method, path, header_match. What cannot be mapped is
listed on stderr and in the output's header; the exit status is 0 when policies were written,
1 on bad input.
`

// importCmd migrates another rate limiter's configuration.
func importCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "envoy-ratelimit" {
		fmt.Fprint(stderr, importUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("import envoy-ratelimit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, importUsage)
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "write the policies to `FILE` instead of stdout")
	keys := keyFlag{}
	fs.Var(keys, "key", "treat descriptor key `ENVOY_KEY=MEANING` as flowguard's MEANING (repeatable)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return badFlags(fs, stderr, fmt.Errorf("want one FILE, got %d arguments", fs.NArg()))
	}
	file := fs.Arg(0)
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	res, err := envoyimport.Convert(file, data, envoyimport.Options{Keys: keys})
	if err != nil {
		return err
	}
	if *out == "" {
		if _, err := stdout.Write(res.YAML); err != nil {
			return err
		}
	} else if err := os.WriteFile(*out, res.YAML, 0o644); err != nil {
		return err
	}
	for _, it := range res.Skipped {
		fmt.Fprintln(stderr, it.Skip())
	}
	for _, it := range res.Approximated {
		fmt.Fprintln(stderr, it.Approx())
	}
	dest := "stdout"
	if *out != "" {
		dest = *out
	}
	summary := fmt.Sprintf("flowguard import envoy-ratelimit: %d rule%s written to %s", res.Rules, plural(int64(res.Rules)), dest)
	if n := len(res.Skipped); n > 0 {
		summary += fmt.Sprintf("; %d item%s not mapped (listed above and in the output's header)", n, plural(int64(n)))
	}
	if n := len(res.Approximated); n > 0 {
		summary += fmt.Sprintf("; %d item%s mapped with other semantics", n, plural(int64(n)))
	}
	fmt.Fprintln(stderr, summary)
	return nil
}

// keyFlag is --key ENVOY_KEY=MEANING, repeatable.
type keyFlag map[string]string

func (k keyFlag) String() string {
	var pairs []string
	for envoy, meaning := range k {
		pairs = append(pairs, envoy+"="+meaning)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

func (k keyFlag) Set(s string) error {
	envoy, meaning, ok := strings.Cut(s, "=")
	if !ok || envoy == "" {
		return fmt.Errorf("%q is not ENVOY_KEY=MEANING", s)
	}
	if err := (envoyimport.Options{Keys: map[string]string{envoy: meaning}}).Validate(); err != nil {
		return err
	}
	k[envoy] = meaning
	return nil
}
