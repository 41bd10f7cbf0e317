package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestChaosShort runs every fault of the harness briefly (3 s each, 3 s of
// recovery, light load): what CI runs; `make chaos` runs the full length.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 11 processes for about a minute")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed, and CI=true forbids skipping: %v", err)
		}
		t.Skipf("redis-server not installed: %v", err)
	}
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
