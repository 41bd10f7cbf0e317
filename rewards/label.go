package rewards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
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

// maxLabelSpan bounds To - From.
const maxLabelSpan = 30 * 24 * time.Hour

// ParseLabel decodes one label strictly: one JSON object, no unknown
// fields, every required field present, then Validate. The error wraps
// ErrBadLabel and says what is wrong; it never panics.
func ParseLabel(data []byte) (Label, error) {
	var w struct {
		LabelID  *string    `json:"label_id"`
		Key      *string    `json:"key"`
		Tenant   string     `json:"tenant"`
		Abusive  *bool      `json:"abusive"`
		From     *time.Time `json:"from"`
		To       *time.Time `json:"to"`
		Source   string     `json:"source"`
		Severity *float64   `json:"severity"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Label{}, fmt.Errorf("%w: %v", ErrBadLabel, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Label{}, fmt.Errorf("%w: data after the label object", ErrBadLabel)
	}
	for name, missing := range map[string]bool{"label_id": w.LabelID == nil, "key": w.Key == nil,
		"abusive": w.Abusive == nil, "from": w.From == nil, "to": w.To == nil} {
		if missing {
			return Label{}, fmt.Errorf("%w: %s is required", ErrBadLabel, name)
		}
	}
	l := Label{LabelID: *w.LabelID, Key: *w.Key, Tenant: w.Tenant, Abusive: *w.Abusive,
		From: *w.From, To: *w.To, Source: w.Source, Severity: 1}
	if w.Severity != nil {
		l.Severity = *w.Severity
	}
	return l, l.Validate()
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
