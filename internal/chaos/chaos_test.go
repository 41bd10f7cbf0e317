package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
)

// TestChaosShort runs every fault of the harness briefly (3 s each, 3 s of
// recovery, light load): what CI runs; `make chaos` runs the full length.
func TestChaosShort(t *testing.T) {
	testenv.SkipShort(t, "starts 11 processes for about a minute")
	testenv.Need(t, "redis-server", "redis-server")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := defaultOptions()
	o.Fault, o.Settle, o.Rate, o.HotRate = 3*time.Second, 3*time.Second, 80, 80
	rep, err := Run(ctx, o)
	var out bytes.Buffer
	if rep != nil {
		rep.Print(&out)
	}
	t.Logf("\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 6 {
		t.Fatalf("%d rows, want the baseline and 5 faults", len(rep.Rows))
	}
	if !rep.OK() {
		t.Fatal("a fault broke a requirement (5xx, unanswered, labels not applied exactly once, or admissions above the bound)")
	}
	os.RemoveAll(rep.Dir)
}
