package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/devflow/flowguard/rewards"
)

// maxLabelsPerCall bounds one POST /v1/labels.
const maxLabelsPerCall = 1000

// labelSink takes labels for the learner: the embedded learner's queue,
// or the Kafka labels topic. Send reports whether every label was taken;
// a label not taken must be resent by the caller.
type labelSink interface {
	Send(ctx context.Context, labels []rewards.Label, at time.Time) error
}

// queueLabels sends labels to the embedded learner.
type queueLabels struct{ q *rewards.Queue }

func (s queueLabels) Send(_ context.Context, labels []rewards.Label, at time.Time) error {
	for i, l := range labels {
		if !s.q.Label(l, at) {
			return fmt.Errorf("the learner's queue is full after %d of %d labels", i, len(labels))
		}
	}
	return nil
}

// handleLabels serves POST /v1/labels: one label object or an array of at
// most 1000, with the schema of the flowguard.labels topic. Every label
// is validated before any is sent, so a 400 means none was taken. 202
// means all were taken (duplicates included: they have no effect). 503
// means the learner could not take them now; resend them all, which is
// safe since labels are idempotent by label_id. Accepted labels are also
// attributed to the experiment variant of their key (serving/experiments.go):
// abusive labels, false-throttle complaints and clears, each label_id once.
func (s *Server) handleLabels(ctx *fasthttp.RequestCtx) {
	body := bytes.TrimSpace(ctx.PostBody())
	if len(body) > s.cfg.Server.MaxBatchBodyBytes {
		s.writeError(ctx, bodyTooLarge(s.cfg.Server.MaxBatchBodyBytes))
		return
	}
	var raws []json.RawMessage
	if len(body) > 0 && body[0] == '[' {
		if err := json.Unmarshal(body, &raws); err != nil {
			s.writeError(ctx, badRequest("malformed_json", "labels: "+err.Error()))
			return
		}
	} else {
		raws = []json.RawMessage{body}
	}
	if len(raws) == 0 || len(raws) > maxLabelsPerCall {
		s.writeError(ctx, badRequest("bad_batch_size", "send 1 to "+strconv.Itoa(maxLabelsPerCall)+" labels per call"))
		return
	}
	labels := make([]rewards.Label, len(raws))
	for i, raw := range raws {
		l, err := rewards.ParseLabelAt(raw, s.pipe.Now(), s.cfg.ML.LabelHorizon)
		if err != nil {
			s.metrics.labels.WithLabelValues("invalid").Inc()
			s.writeError(ctx, badRequest(rewards.ErrorCode(err), fmt.Sprintf("label %d: %v", i, err)))
			return
		}
		labels[i] = l
	}
	if s.labels == nil {
		s.writeError(ctx, &apiError{status: 503, code: "no_learner", message: "this instance has no learner and no Kafka to send labels to"})
		return
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.labels.Send(sctx, labels, s.pipe.Now()); err != nil {
		s.metrics.labels.WithLabelValues("unavailable").Inc()
		s.log.Warn("labels not taken", "n", len(labels), "err", err)
		ctx.Response.Header.Set("Retry-After", "1")
		s.writeError(ctx, &apiError{status: 503, code: "learner_unavailable", message: err.Error() + "; resend the labels"})
		return
	}
	s.metrics.labels.WithLabelValues("accepted").Add(float64(len(labels)))
	s.applyLabels(labels)
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"accepted":` + strconv.Itoa(len(labels)) + `}`)
}
