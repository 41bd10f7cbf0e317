package serving

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"reflect"
	"time"

	"github.com/devflow/flowguard/internal/config"
)

// watchConfig reloads the policies on each Options.Reloads receive (the
// CLI's SIGHUP) and whenever the file's contents change. The embedded
// default has no file, so a reload has nothing to do.
func (s *Server) watchConfig(ctx context.Context) {
	var tick <-chan time.Time
	if s.cfg.Path != "" && s.cfg.Server.ReloadEvery > 0 {
		t := time.NewTicker(s.cfg.Server.ReloadEvery)
		defer t.Stop()
		tick = t.C
	}
	// Compare with the bytes the running configuration was loaded from, not
	// with a read made when this goroutine started: a write in between
	// would otherwise never be seen as a change.
	var last []byte
	var lastExp string // digest of the last experiments file version seen
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reloads:
			s.log.Info("reload requested (SIGHUP): reloading policies", "config", s.cfg.Name)
			// Read before Reload reads: a write after this read is then
			// seen as a change on the next tick and loaded, so the last
			// write always wins. Reading after Reload would record a write
			// made in between as loaded when it was not.
			before, _ := os.ReadFile(s.cfg.Path)
			_ = s.Reload()
			last = before
		case <-tick:
			data, err := os.ReadFile(s.cfg.Path)
			if err != nil {
				// Report an unreadable file once, not every tick: it is
				// often a deploy swapping the file in.
				if prev := s.reloadErr.Load(); prev == nil || *prev != err.Error() {
					s.reloadFailed(err)
				}
				continue
			}
			if bytes.Equal(data, last) || last == nil && digestOf(data) == s.current.Load().Digest {
				last = data
				// The experiments file reloads with the configuration; an
				// invalid version is reported once, not every tick.
				d, changed := s.experimentsFileChanged()
				if !changed || d == lastExp {
					continue
				}
				lastExp = d
			}
			last = data
			s.log.Info("configuration file changed: reloading policies", "config", s.cfg.Name)
			_ = s.Reload()
		}
	}
}

// Reload re-reads the configuration file and swaps in its policies and its
// experiments file (stops in force stay applied). An
// invalid file keeps the current policies: the error is logged, counted in
// flowguard_policy_reloads_total{result="error"}, shown on /readyz and
// returned. Changes outside the policies section need a restart, and a
// warning says so.
func (s *Server) Reload() error {
	if s.cfg.Path == "" {
		s.log.Info("running on the embedded default: nothing to reload")
		return nil
	}
	next, err := config.Load(s.cfg.Path)
	if err != nil {
		s.reloadFailed(err)
		return err
	}
	cur := s.current.Load()
	if changed := restartSections(cur, next); len(changed) > 0 {
		s.log.Warn("settings that apply only after a restart changed; policies and experiments reloaded now",
			"sections", changed, "config", next.Name)
	}
	if err := s.installExperiments(next); err != nil {
		s.reloadFailed(err)
		return err
	}
	s.pipe.SetPolicies(next.Policies)
	s.current.Store(next)
	s.reloadErr.Store(nil)
	s.reloadedAt.Store(time.Now().UnixMilli())
	s.metrics.reloads.WithLabelValues("success").Inc()
	s.log.Info("policies reloaded", "config", next.Name, "digest", next.Digest, "tiers", next.Policies.Tiers())
	return nil
}

// restartSections names the sections of the configuration whose changes
// from cur to next a reload does not apply. ml: is among them: serving
// and learners derive experiment variants' model keys from the ml:
// section they started with, so they agree until both restart.
func restartSections(cur, next *config.Loaded) []string {
	var out []string
	for _, c := range []struct {
		name string
		a, b any
	}{
		{"server", cur.Server, next.Server}, {"redis", cur.Redis, next.Redis}, {"kafka", cur.Kafka, next.Kafka},
		{"ml", cur.ML, next.ML}, {"audit", cur.Audit, next.Audit}, {"regions", cur.Regions, next.Regions},
		{"experiments.stop_log", cur.Experiments.StopLog, next.Experiments.StopLog},
	} {
		if !reflect.DeepEqual(c.a, c.b) {
			out = append(out, c.name)
		}
	}
	return out
}

func (s *Server) reloadFailed(err error) {
	msg := err.Error()
	s.reloadErr.Store(&msg)
	s.metrics.reloads.WithLabelValues("error").Inc()
	s.log.Error("policy reload failed; keeping the current policies", "err", msg)
}

// digestOf is config.Loaded.Digest for data.
func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// experimentsFileChanged reports whether the experiments file in force
// (experiments.file) now holds other bytes than it was loaded from. The
// embedded default and experiments off never change; an unreadable file
// is left to Reload to report.
func (s *Server) experimentsFileChanged() (digest string, changed bool) {
	cur := s.current.Load()
	if cur.ExperimentsConfig == nil || cur.Experiments.File == config.ExperimentsEmbedded {
		return "", false
	}
	data, err := os.ReadFile(cur.Experiments.File)
	if err != nil {
		return "", false
	}
	digest = digestOf(data)
	return digest, digest != cur.ExperimentsConfig.Digest
}
