package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/devflow/flowguard/quotas"
)

// The static-p99 baselines are seed 004 itself: the quotas the simulator
// enforced are the ones `flowguard quotas backtest` fits on the usage the
// simulator exported as CSV, pooled and per tier. One function, quotas.Fit,
// serves both.
func TestSimStaticP99IsQuotasBacktest(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"sim", "--scenario", "../../examples/scenarios/small.yaml", "--policies", "static-p99,static-p99-tier",
		"--usage-csv", "--progress", "off", "--out", dir}, &out, &errOut); code != 0 {
		t.Fatalf("sim: exit %d: %s", code, errOut.String())
	}
	raw, err := os.ReadFile(filepath.Join(dir, "details.json"))
	if err != nil {
		t.Fatal(err)
	}
	var details struct {
		Policies map[string]struct {
			Details struct {
				Quotas []string `json:"quotas"`
			} `json:"details"`
		} `json:"policies"`
	}
	if err := json.Unmarshal(raw, &details); err != nil {
		t.Fatal(err)
	}
	for _, policy := range []string{"static-p99", "static-p99-tier"} {
		t.Run(policy, func(t *testing.T) {
			lines := details.Policies[policy].Details.Quotas
			if len(lines) == 0 {
				t.Fatal("the simulator fitted no quota")
			}
			// The last fit: "until [tier] METHOD /path quota".
			last := strings.Fields(lines[len(lines)-1])[0]
			sim := map[string]float64{}
			for _, l := range lines {
				f := strings.Fields(l)
				if f[0] != last {
					continue
				}
				q, err := strconv.ParseFloat(f[len(f)-1], 64)
				if err != nil {
					t.Fatal(err)
				}
				sim[strings.Join(f[1:len(f)-1], " ")] = q
			}
			until, _ := quotas.ParseDay(last)
			var bt, btErr bytes.Buffer
			code := run([]string{"quotas", "backtest", "--usage", filepath.Join(dir, "usage-"+policy+".csv"),
				"--train-until", last, "--test-until", (until + 1).String(), "--json"}, &bt, &btErr)
			if code != 0 && code != 3 { // 3: an alert, which is not this test's business
				t.Fatalf("quotas backtest: exit %d: %s", code, btErr.String())
			}
			var rows []quotas.EndpointBacktest
			if err := json.Unmarshal(bt.Bytes(), &rows); err != nil {
				t.Fatalf("%v: %s", err, bt.String())
			}
			cli := map[string]float64{}
			for _, r := range rows {
				if r.Quota != nil {
					name := r.Endpoint
					if r.Tier != "" {
						name = r.Tier + " " + r.Endpoint
					}
					cli[name] = *r.Quota
				}
			}
			if len(cli) != len(sim) {
				t.Fatalf("the CLI fitted %v, the simulator enforced %v", cli, sim)
			}
			for k, q := range sim {
				// The simulator's log prints FormatQuota (4 decimals).
				if got, ok := cli[k]; !ok || quotas.FormatQuota(got) != quotas.FormatQuota(q) {
					t.Errorf("%s: the CLI fitted %v, the simulator enforced %v", k, got, q)
				}
			}
			if policy == "static-p99-tier" && len(sim) < 2 {
				t.Errorf("per tier × endpoint, yet %d quotas: %v", len(sim), sim)
			}
		})
	}
}
