package serving

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/pipeline"
)

// Decision is the pipeline's answer to one request, as serving encodes it.
type Decision = pipeline.Decision

// DecideRequest is one gateway question: may this key make this request?
type DecideRequest = pipeline.Request

const defaultDecisionIDBytes = 40

// decide runs the pipeline for one request (pipeline.Pipeline.Decide):
// handlers parse, call it and encode.
func (s *Server) decide(ctx context.Context, req *DecideRequest) Decision {
	return s.pipe.Decide(ctx, req)
}

// recordDecision is serving's part of a decision's aftermath, once the
// pipeline has observed it: the key's recent decisions for explain and,
// for a block or an audited throttle, the audit log.
func (s *Server) recordDecision(req DecideRequest, d Decision) {
	now := d.At
	s.recent.add(req.Key, RecentDecision{
		Time: now.UTC(), DecisionID: d.DecisionID, Endpoint: req.Endpoint,
		Decision: d.Action, Reason: d.Reason, Limit: d.Limit, Remaining: d.Remaining,
		Multiplier: d.Multiplier, Arm: d.Arm, Fallback: d.Fallback,
	})
	if s.audit != nil && (d.Action == pipeline.ActionBlock || d.Action == pipeline.ActionThrottle && d.Rule.Audit) {
		rec := AuditRecord{
			Time: now.UTC().Format("2006-01-02T15:04:05.000000Z"), Key: req.Key, Tenant: req.Tenant,
			Endpoint: req.Endpoint, Decision: d.Action, Reason: d.Reason, DecisionID: d.DecisionID,
			PolicyVersion: s.current.Load().Digest, ModelVersion: d.ModelVersion, Arm: d.Arm,
			Multiplier: d.Multiplier, Propensity: d.Propensity,
		}
		if d.Chosen {
			rec.Risk, rec.FeaturesHash = d.Risk, hexHash(d.FeaturesHash)
		}
		s.audit.Record(rec)
		s.metrics.auditRecords.Inc()
	}
}

// idSource makes decision IDs: an instance prefix and a counter, unique
// across instances and restarts without coordination.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDSource(now time.Time, pid int) *idSource {
	prefix := "d" + strconv.FormatInt(now.UnixMilli(), 36) + strconv.FormatInt(int64(pid), 36) + "-"
	return &idSource{prefix: prefix}
}

func (g *idSource) next() string {
	var b [defaultDecisionIDBytes]byte
	out := append(b[:0], g.prefix...)
	out = strconv.AppendUint(out, g.n.Add(1), 36)
	return string(out)
}
