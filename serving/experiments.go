package serving

// Experiments in serving: wiring only. The runtime (assignment, variant
// counters, the guardrail loop, the stop log and label attribution) is
// experiments.Runtime; its policy semantics are documented there.

import (
	"context"
	"errors"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/rewards"
)

// newExperiments returns the experiments runtime for cfg, its metrics
// registered.
func (s *Server) newExperiments(cfg *config.Loaded) (*experiments.Runtime, error) {
	ml := cfg.ML
	rt, err := experiments.NewRuntime(experiments.RuntimeOptions{
		GuardrailEvery: cfg.Experiments.GuardrailEvery, GuardrailWindow: cfg.Experiments.GuardrailWindow,
		StopLog: cfg.Experiments.StopLog, Arms: ml.Arms, Exploration: ml.Exploration, Logger: s.log,
		OwnModels: func(c *experiments.Config) map[string]string {
			own := map[string]string{}
			for _, vm := range ml.VariantModels(c) {
				own[vm.ID] = vm.Key()
			}
			return own
		},
	})
	if err != nil {
		return nil, err
	}
	s.metrics.reg.MustRegister(rt.Collectors()...)
	if cfg.Experiments.StopLog == "" && cfg.ExperimentsConfig != nil {
		s.log.Warn("experiments.stop_log is not set: a variant a guardrail stops resumes after a restart")
	}
	return rt, nil
}

// installExperiments makes cfg's experiments current (start and reload).
func (s *Server) installExperiments(cfg *config.Loaded) error {
	err := s.exp.Install(cfg.ExperimentsConfig)
	if err != nil && !errors.Is(err, experiments.ErrUnknownStops) {
		return err
	}
	if err != nil {
		s.log.Warn("stop records name variants the experiments file lacks; they apply if those variants return", "err", err)
	}
	if s.learner != nil {
		// The embedded learner trains the variant models of this file from
		// now on; ones it already had keep what they learned.
		ch, err := s.learner.SetVariants(cfg.ML.VariantModels(cfg.ExperimentsConfig))
		if err != nil {
			return err
		}
		if !ch.Empty() {
			s.log.Info("variant models changed", "added", ch.Added, "dropped", ch.Removed)
		}
	}
	ec := s.exp.Config()
	if ec == nil {
		return nil
	}
	for _, x := range ec.Experiments {
		for _, v := range x.Variants {
			if v.Policy == experiments.PolicyShadow && cfg.ML.OwnModel(v.Bandit) {
				s.log.Warn("shadow variant's lambda, posterior or reward_mode differ from ml:, or its arms are not a run of ml.arms: a shadow variant enforces the deterministic budget, so nothing could train a model of its own; it draws from the main model",
					"experiment", x.Name, "variant", v.Name)
			}
		}
	}
	for _, v := range s.exp.StoppedVariants() {
		s.log.Warn("experiment variant stopped: its units get the control's policy until `flowguard experiments resume`",
			"experiment", v.Experiment, "variant", v.Variant)
	}
	s.log.Info("experiments loaded", "file", ec.Name, "digest", ec.Digest, "experiments", len(ec.Experiments))
	return nil
}

// runGuardrails runs the guardrail loop until ctx is cancelled; each stop
// is audited.
func (s *Server) runGuardrails(ctx context.Context) {
	s.exp.Run(ctx, s.auditStop)
}

// auditStop writes a guardrail stop to the audit log.
func (s *Server) auditStop(st experiments.Stop) {
	if s.audit == nil {
		return
	}
	s.audit.Record(AuditRecord{
		Time: st.At.UTC().Format("2006-01-02T15:04:05.000000Z"), Decision: "experiment_stop",
		Endpoint: st.Experiment + "/" + st.Variant, PolicyVersion: st.Digest,
		Reason: "guardrail " + string(st.Metric) + ": " + st.Reason,
	})
	s.metrics.auditRecords.Inc()
}

// applyLabels acts on accepted labels: each holds or releases its key in
// the pipeline (ml.label_action), audited, and counts against its key's
// experiment variant.
func (s *Server) applyLabels(labels []rewards.Label) {
	for _, l := range labels {
		s.pipe.LabelFeatures(l)
	}
	if s.cfg.ML.LabelAction == config.LabelActionOn {
		for _, l := range labels {
			changed, err := s.pipe.ApplyLabel(l)
			if err != nil {
				s.metrics.labelActions.WithLabelValues("refused").Inc()
				s.log.Warn("a label cannot hold its key", "err", err, "held", s.pipe.LabelledKeys())
				continue
			}
			if !changed {
				continue
			}
			action := "hold"
			if !l.Abusive {
				action = "release"
			}
			s.metrics.labelActions.WithLabelValues(action).Inc()
			if s.audit != nil {
				s.audit.Record(AuditRecord{Time: s.pipe.Now().UTC().Format("2006-01-02T15:04:05.000000Z"), Key: l.Key,
					Tenant: l.Tenant, Decision: "label_" + action, Reason: l.Source + " " + l.LabelID,
					PolicyVersion: s.current.Load().Digest})
				s.metrics.auditRecords.Inc()
			}
		}
	}
	s.exp.AttributeLabels(labels, s.pipe.LabelVariant)
}
