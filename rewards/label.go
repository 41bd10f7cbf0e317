package rewards

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/valyala/fastjson"
)

// Label is one verdict on a key over a time range, from a fraud
// investigation, a chargeback, an incident or a customer's complaint
// (DESIGN.md, flowguard.labels).
type Label struct {
	// LabelID identifies the label; a second label with the same id has no
	// effect. Required, at most 128 bytes.
	LabelID string `json:"label_id"`
	// Key is the API key judged. Required, at most 256 bytes.
	Key string `json:"key"`
	// Tenant is informational.
	Tenant string `json:"tenant,omitempty"`
	// Abusive: true marks the key's traffic in [From, To) as abuse; false
	// clears it (e.g. a false-throttle complaint). Required.
	Abusive bool `json:"abusive"`
	// From and To bound the judged traffic: From < To, at most 30 days
	// apart. Required.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Source says where the label came from: chargeback, investigation…
	Source string `json:"source,omitempty"`
	// Severity in [0, 1] weighs an abusive label: the share of the key's
	// traffic judged abusive. Default: 1.
	Severity float64 `json:"severity"`
}

// ErrBadLabel is wrapped by every error of ParseLabel and Label.Validate.
var ErrBadLabel = errors.New("bad label")

// ErrLabelInFuture is wrapped by the error of a label whose range ends
// further past the time it was received than the horizon allows
// (Label.CheckHorizon, ParseLabelAt, Partition.Label). It wraps ErrBadLabel.
var ErrLabelInFuture = fmt.Errorf("%w: label_in_future", ErrBadLabel)

// DefaultLabelHorizon is the default of ml.label_horizon: how far past its
// receipt a label's To may lie — clock skew between the sender and
// flowguard, not a licence to judge traffic that has not happened.
const DefaultLabelHorizon = time.Hour

// maxLabelSpan bounds To - From.
const maxLabelSpan = 30 * 24 * time.Hour

// ParseLabel decodes one label strictly: one JSON object, no unknown or
// repeated fields, every required field present (null counts as absent),
// then Validate. The error wraps ErrBadLabel and says what is wrong; it
// never panics. It is the learner's hot path (≥ 100k labels/s), hence
// fastjson rather than reflection.
func ParseLabel(data []byte) (Label, error) {
	p := labelParsers.Get()
	defer labelParsers.Put(p)
	v, err := p.ParseBytes(data)
	if err != nil {
		return Label{}, fmt.Errorf("%w: %v", ErrBadLabel, err)
	}
	o, err := v.Object()
	if err != nil {
		return Label{}, fmt.Errorf("%w: a label is a JSON object, got %s", ErrBadLabel, v.Type())
	}
	l := Label{Severity: 1}
	var seen, present uint8
	o.Visit(func(k []byte, v *fastjson.Value) {
		if err != nil {
			return
		}
		bit, ok := labelFields[string(k)]
		if !ok {
			err = fmt.Errorf("unknown field %q", k)
			return
		}
		if seen&bit != 0 {
			err = fmt.Errorf("field %q appears twice", k)
			return
		}
		seen |= bit
		if v.Type() == fastjson.TypeNull {
			return
		}
		present |= bit
		switch string(k) {
		case "label_id":
			l.LabelID, err = jsonString(v, "label_id")
		case "key":
			l.Key, err = jsonString(v, "key")
		case "tenant":
			l.Tenant, err = jsonString(v, "tenant")
		case "source":
			l.Source, err = jsonString(v, "source")
		case "abusive":
			if l.Abusive, err = v.Bool(); err != nil {
				err = fmt.Errorf("abusive must be true or false, got %s", v.Type())
			}
		case "from":
			l.From, err = jsonTime(v, "from")
		case "to":
			l.To, err = jsonTime(v, "to")
		case "severity":
			if l.Severity, err = v.Float64(); err != nil {
				err = fmt.Errorf("severity must be a number, got %s", v.Type())
			}
		}
	})
	if err != nil {
		return Label{}, fmt.Errorf("%w: %v", ErrBadLabel, err)
	}
	for _, f := range requiredLabelFields {
		if present&labelFields[f] == 0 {
			return Label{}, fmt.Errorf("%w: %s is required", ErrBadLabel, f)
		}
	}
	return l, l.Validate()
}

// ParseLabelAt is ParseLabel, then CheckHorizon(at, horizon): what a
// label received at at must pass. POST /v1/labels refuses with it what
// the learner, given the same horizon, would refuse, so that a 202 is
// never followed by a refusal.
func ParseLabelAt(data []byte, at time.Time, horizon time.Duration) (Label, error) {
	l, err := ParseLabel(data)
	if err != nil {
		return Label{}, err
	}
	if err := l.CheckHorizon(at, horizon); err != nil {
		return Label{}, err
	}
	return l, nil
}

// CheckHorizon reports an error wrapping ErrLabelInFuture when l.To lies
// more than horizon after at, the time the label was received. A horizon
// of 0 checks nothing.
func (l Label) CheckHorizon(at time.Time, horizon time.Duration) error {
	if horizon > 0 && l.To.Sub(at) > horizon {
		return fmt.Errorf("%w: to %s lies more than %s (ml.label_horizon) after the label was received at %s",
			ErrLabelInFuture, l.To.Format(time.RFC3339), horizon, at.UTC().Format(time.RFC3339))
	}
	return nil
}

var (
	labelParsers fastjson.ParserPool
	labelFields  = map[string]uint8{"label_id": 1, "key": 2, "tenant": 4, "abusive": 8, "from": 16, "to": 32,
		"source": 64, "severity": 128}
	requiredLabelFields = []string{"label_id", "key", "abusive", "from", "to"}
)

func jsonString(v *fastjson.Value, field string) (string, error) {
	b, err := v.StringBytes()
	if err != nil {
		return "", fmt.Errorf("%s must be a string, got %s", field, v.Type())
	}
	return string(b), nil
}

// jsonTime parses an RFC 3339 time as encoding/json does for time.Time.
func jsonTime(v *fastjson.Value, field string) (time.Time, error) {
	b, err := v.StringBytes()
	if err != nil {
		return time.Time{}, fmt.Errorf("%s must be an RFC 3339 time string, got %s", field, v.Type())
	}
	var t time.Time
	if err := t.UnmarshalText(b); err != nil {
		return time.Time{}, fmt.Errorf("%s: %v", field, err)
	}
	return t, nil
}

// Validate reports the first problem of l; the error wraps ErrBadLabel.
func (l Label) Validate() error {
	switch {
	case l.LabelID == "" || len(l.LabelID) > 128:
		return fmt.Errorf("%w: label_id must be 1 to 128 bytes", ErrBadLabel)
	case l.Key == "" || len(l.Key) > 256:
		return fmt.Errorf("%w: key must be 1 to 256 bytes", ErrBadLabel)
	case len(l.Tenant) > 256 || len(l.Source) > 256:
		return fmt.Errorf("%w: tenant and source are at most 256 bytes", ErrBadLabel)
	case !l.From.Before(l.To):
		return fmt.Errorf("%w: from %s is not before to %s", ErrBadLabel, l.From.Format(time.RFC3339), l.To.Format(time.RFC3339))
	case l.To.Sub(l.From) > maxLabelSpan:
		return fmt.Errorf("%w: from and to are more than 30 days apart", ErrBadLabel)
	case l.From.Year() < 2000 || l.To.Year() > 9999:
		return fmt.Errorf("%w: from and to must lie between the years 2000 and 9999", ErrBadLabel)
	case math.IsNaN(l.Severity) || l.Severity < 0 || l.Severity > 1:
		return fmt.Errorf("%w: severity %v must be in [0, 1]", ErrBadLabel, l.Severity)
	}
	return nil
}

// severity is the share of the labelled traffic judged abusive.
func (l Label) severity() float64 {
	if !l.Abusive {
		return 0
	}
	return l.Severity
}
