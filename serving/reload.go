package serving

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/devflow/flowguard/internal/config"
)

// watchConfig reloads the policies on SIGHUP and whenever the file's
// contents change. The embedded default has no file, so only SIGHUP is
// watched, and it has nothing to reload.
func (s *Server) watchConfig(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
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
		case <-hup:
			s.log.Info("SIGHUP: reloading policies", "config", s.cfg.Name)
			_ = s.Reload()
			last, _ = os.ReadFile(s.cfg.Path)
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
	s.policies.Store(next.Policies)
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
