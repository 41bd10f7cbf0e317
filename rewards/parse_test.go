package rewards

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLabel(t *testing.T) {
	ok := `{"label_id":"inv-0001","key":"k_live_1","tenant":"acme","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z","source":"chargeback","severity":1.0}`
	l, err := ParseLabel([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if l.LabelID != "inv-0001" || !l.Abusive || l.Severity != 1 || l.To.Sub(l.From).Hours() != 24 {
		t.Errorf("parsed %+v", l)
	}
	noSev, err := ParseLabel([]byte(`{"label_id":"c","key":"k","abusive":false,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`))
	if err != nil || noSev.Severity != 1 {
		t.Errorf("severity defaults to 1: %+v %v", noSev, err)
	}
	bad := map[string]struct{ in, msg string }{
		"not json":       {`{`, "cannot parse JSON"},
		"unknown field":  {`{"label_id":"a","key":"k","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z","colour":"red"}`, `unknown field "colour"`},
		"missing key":    {`{"label_id":"a","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "key is required"},
		"missing abuse":  {`{"label_id":"a","key":"k","from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "abusive is required"},
		"to before from": {`{"label_id":"a","key":"k","abusive":true,"from":"2026-11-21T00:00:00Z","to":"2026-11-20T00:00:00Z"}`, "is not before"},
		"severity":       {`{"label_id":"a","key":"k","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z","severity":2}`, "severity 2 must be in [0, 1]"},
		"bad time":       {`{"label_id":"a","key":"k","abusive":true,"from":"yesterday","to":"2026-11-21T00:00:00Z"}`, "cannot parse"},
		"two objects":    {`{"label_id":"a","key":"k","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"} {}`, "unexpected tail"},
		"long span":      {`{"label_id":"a","key":"k","abusive":true,"from":"2026-01-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "more than 30 days"},
		"repeated field": {`{"label_id":"a","key":"k","key":"j","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, `field "key" appears twice`},
		"abusive string": {`{"label_id":"a","key":"k","abusive":"yes","from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "abusive must be true or false, got string"},
		"null id":        {`{"label_id":null,"key":"k","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "label_id is required"},
		"key a number":   {`{"label_id":"a","key":7,"abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "key must be a string, got number"},
		"an array":       {`[]`, "a label is a JSON object, got array"},
		"empty id":       {`{"label_id":"","key":"k","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`, "label_id must be"},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseLabel([]byte(tc.in))
			if !errors.Is(err, ErrBadLabel) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want ErrBadLabel containing %q", err, tc.msg)
			}
		})
	}
}

func TestParseRecord(t *testing.T) {
	dec := `{"type":"decision","id":"d1","key":"k","tier":"free","at":"2026-11-20T00:00:00Z","experiment":"e","variant":"lints","policy":"bandit","arm":2,"propensity":0.5,"context":[0.1,0.2],"base":60}`
	if r, err := ParseRecord([]byte(dec)); err != nil || r.Policy != PolicyBandit || r.Variant != "lints" {
		t.Fatal(r, err)
	}
	// Before the policy field, variant said bandit or shadow.
	old := `{"type":"decision","id":"d1","key":"k","at":"2026-11-20T00:00:00Z","variant":"shadow","arm":2,"propensity":0.5,"context":[0.1],"base":60}`
	if r, err := ParseRecord([]byte(old)); err != nil || r.Policy != PolicyShadow || r.Variant != "" {
		t.Errorf("an old record: %+v %v", r, err)
	}
	classed := strings.Replace(dec, `"tier":"free"`, `"tier":"gold","tier_class":"enterprise"`, 1)
	if r, err := ParseRecord([]byte(classed)); err != nil || !r.PolicyTier().Enterprise() || r.PolicyTier().Name != "gold" {
		t.Errorf("a classed record: %+v %v", r, err)
	}
	if r, err := ParseRecord([]byte(strings.Replace(dec, `"free"`, `"Enterprise"`, 1))); err != nil || !r.PolicyTier().Enterprise() {
		t.Errorf("a record without a class, of a tier named Enterprise, is enterprise-class: %+v %v", r, err)
	}
	bad := map[string]struct{ in, msg string }{
		"tier class": {strings.Replace(classed, `"enterprise"`, `"gold"`, 1), `tier_class "gold", want enterprise or standard`},
		"type":       {`{"type":"guess","id":"d","key":"k","at":"2026-11-20T00:00:00Z"}`, `type "guess"`},
		"propensity": {strings.Replace(dec, `0.5`, `0`, 1), "propensity 0"},
		"counts":     {`{"type":"outcome","id":"d","key":"k","at":"2026-11-20T00:00:00Z","served":-1}`, "counts must be"},
		"context":    {strings.Replace(dec, `[0.1,0.2]`, `[]`, 1), "context must have"},
		"unknown":    {strings.Replace(dec, `"base":60`, `"base":60,"x":1`, 1), `unknown field "x"`},
		"policy":     {strings.Replace(dec, `"bandit"`, `"guess"`, 1), `policy "guess", want bandit, shadow or static`},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRecord([]byte(tc.in))
			if !errors.Is(err, ErrBadRecord) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want ErrBadRecord containing %q", err, tc.msg)
			}
		})
	}
}

func seedCorpus(f *testing.F, name string) {
	dir := filepath.Join("testdata", "fuzz", name)
	if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
		f.Fatalf("seed corpus missing in %s", dir)
	}
}

func FuzzParseLabel(f *testing.F) {
	seedCorpus(f, "FuzzParseLabel")
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseLabel(data)
		if err != nil {
			if !errors.Is(err, ErrBadLabel) {
				t.Fatalf("error does not wrap ErrBadLabel: %v", err)
			}
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("parsed label fails Validate: %v", err)
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	seedCorpus(f, "FuzzParseRecord")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRecord(data)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error does not wrap ErrBadRecord: %v", err)
			}
			return
		}
		p, _ := NewPartition(Config{Bandit: testConfig().Bandit, Risk: testConfig().Risk})
		_ = p.Record(r) // must not panic, whatever the record
	})
}

func FuzzRestorePartition(f *testing.F) {
	seedCorpus(f, "FuzzRestorePartition")
	f.Fuzz(func(t *testing.T, data []byte) {
		// As given, and resealed with a valid checksum so that the fuzzer
		// reaches the decoding behind it.
		for _, data := range [][]byte{data, reseal(data)} {
			p, err := RestorePartition(variantConfig(variantA, variantB), data)
			if err != nil {
				if !errors.Is(err, ErrBadCheckpoint) {
					t.Fatalf("error does not wrap ErrBadCheckpoint: %v", err)
				}
				continue
			}
			apply(t, p, variantStream(9, 3, 2))
		}
	})
}

func FuzzDecodeModelPart(f *testing.F) {
	seedCorpus(f, "FuzzDecodeModelPart")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, data := range [][]byte{data, reseal(data)} {
			m, err := DecodeModelPart(data)
			if err != nil {
				if !errors.Is(err, ErrBadModel) {
					t.Fatalf("error does not wrap ErrBadModel: %v", err)
				}
				continue
			}
			if _, err := m.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
			if _, err := Combine(t0, []ModelPart{m}); err != nil && m.Bandit == nil {
				t.Fatal(err)
			}
		}
	})
}

// reseal returns data with its last 4 bytes replaced by the CRC32C of the
// rest: the checksum checkpoints and model parts end with.
func reseal(data []byte) []byte {
	if len(data) < 4 {
		return data
	}
	body := data[:len(data)-4]
	return binary.LittleEndian.AppendUint32(slices.Clone(body), crc32.Checksum(body, castagnoli))
}

// A label may end at most the horizon after it was received: clock skew,
// not a verdict on traffic that has not happened.
func TestLabelHorizon(t *testing.T) {
	label := func(to string) []byte {
		from := "2026-11-20T00:00:00Z"
		if strings.HasPrefix(to, "9999") {
			from = "9998-12-31T00:00:00Z"
		}
		return []byte(`{"label_id":"a","key":"k","abusive":true,"from":"` + from + `","to":"` + to + `"}`)
	}
	cases := map[string]struct {
		to      string
		horizon time.Duration
		future  bool
	}{
		"in the past":             {to: "2026-11-20T06:00:00Z"},
		"at the default horizon":  {to: "2026-11-20T13:00:00Z", horizon: DefaultLabelHorizon},
		"past the default":        {to: "2026-11-20T13:00:01Z", horizon: DefaultLabelHorizon, future: true},
		"year 9999":               {to: "9999-01-01T00:00:00Z", horizon: DefaultLabelHorizon, future: true},
		"year 9999, no horizon":   {to: "9999-01-01T00:00:00Z"},
		"within a longer horizon": {to: "2026-11-20T13:00:01Z", horizon: 2 * time.Hour},
		"past a shorter horizon":  {to: "2026-11-20T12:01:01Z", horizon: time.Minute, future: true},
	}
	at := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			l, err := ParseLabelAt(label(tc.to), at, tc.horizon)
			if !tc.future {
				if err != nil || l.LabelID != "a" {
					t.Fatalf("ParseLabelAt = %+v, %v; want the label", l, err)
				}
				return
			}
			if !errors.Is(err, ErrLabelInFuture) || !errors.Is(err, ErrBadLabel) || ErrorCode(err) != "label_in_future" {
				t.Fatalf("err = %v (code %s), want ErrLabelInFuture, a bad label, code label_in_future", err, ErrorCode(err))
			}
			if !strings.Contains(err.Error(), "ml.label_horizon") {
				t.Errorf("err = %v, want it to name the setting", err)
			}
		})
	}
}

func TestErrorCodes(t *testing.T) {
	_, bad := ParseLabel([]byte(`{`))
	_, badRec := ParseRecord([]byte(`{`))
	cases := map[string]struct {
		err  error
		code string
	}{
		"future":     {fmt.Errorf("x: %w", ErrLabelInFuture), "label_in_future"},
		"held full":  {fmt.Errorf("x: %w", ErrHeldLabelsFull), "held_labels_full"},
		"bad label":  {bad, "invalid_label"},
		"bad record": {badRec, "invalid_record"},
		"other":      {errors.New("bandit: singular"), "refused"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ErrorCode(tc.err); got != tc.code {
				t.Errorf("ErrorCode(%v) = %s, want %s", tc.err, got, tc.code)
			}
		})
	}
}
