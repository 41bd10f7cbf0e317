package bandit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devflow/flowguard/internal/testenv"
)

func TestParseArmsErrors(t *testing.T) {
	tests := map[string]string{
		"bad_unsorted.yaml":             "bad_unsorted.yaml:4: arm 1 \"x0.5\": multiplier 0.5 is below arm 0 \"x1\" (1): arms must be sorted by increasing multiplier",
		"bad_duplicate_name.yaml":       "bad_duplicate_name.yaml:4: arm 1 \"x1\": duplicate name, also used by arm 0",
		"bad_duplicate_multiplier.yaml": "bad_duplicate_multiplier.yaml:4: arm 1 \"also-one\": multiplier 1 duplicates arm 0 \"one\"",
		"bad_zero_multiplier.yaml":      "bad_zero_multiplier.yaml:2: arm 0 \"zero\": multiplier must be finite and positive, got 0",
		"bad_negative_multiplier.yaml":  "bad_negative_multiplier.yaml:2: arm 0 \"neg\": multiplier must be finite and positive, got -1",
		"bad_nan.yaml":                  "bad_nan.yaml:3: multiplier must be a number, got \".nan\"",
		"bad_unknown_field.yaml":        "bad_unknown_field.yaml:4: unknown field \"weight\" in arm (valid: name, multiplier)",
		"bad_name.yaml":                 "bad_name.yaml:2: arm 0 \"x 1\": name may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit",
		"bad_not_a_number.yaml":         "bad_not_a_number.yaml:3: multiplier must be a number, got \"lots\"",
		"bad_missing_multiplier.yaml":   "bad_missing_multiplier.yaml:2: arm \"x1\" has no multiplier",
		"bad_no_arms.yaml":              "bad_no_arms.yaml:1: invalid arm set: no arms",
		"bad_top_level_key.yaml":        "bad_top_level_key.yaml:1: field arm not found in type bandit.armsFile",
	}
	testenv.BadFiles(t, "testdata/bad_*.yaml", tests, func(t *testing.T, path string) error {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseArms(filepath.Base(path), data)
		return err
	})
}

func TestParseArmsExample(t *testing.T) {
	data, err := os.ReadFile("../examples/arms.yaml")
	if err != nil {
		t.Fatal(err)
	}
	arms, err := ParseArms("examples/arms.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultArms()
	if len(arms) != len(want) {
		t.Fatalf("%d arms, want the %d default ones", len(arms), len(want))
	}
	for i := range want {
		if arms[i].Name != want[i].Name || arms[i].Multiplier != want[i].Multiplier {
			t.Errorf("arm %d: %+v, want %+v", i, arms[i], want[i])
		}
	}
	if err := DefaultArms().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestArmsAllowed(t *testing.T) {
	arms := DefaultArms() // 0.25 0.5 1 1.5 2 4
	tests := map[string]struct {
		floor, ceiling float64
		want           ArmRange
		err            error
	}{
		"everything":           {0, 1e9, ArmRange{0, 6}, nil},
		"enterprise floor 1":   {1, 4, ArmRange{2, 6}, nil},
		"exact bounds":         {0.5, 2, ArmRange{1, 5}, nil},
		"between arms":         {0.6, 1.9, ArmRange{2, 4}, nil},
		"pinned at 1":          {1, 1, ArmRange{2, 3}, nil},
		"no arm in the window": {1.1, 1.4, ArmRange{}, ErrNoArm},
		"above all":            {5, 10, ArmRange{}, ErrNoArm},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := arms.Allowed(tc.floor, tc.ceiling)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("Allowed(%v, %v) = %v, %v; want %v, %v", tc.floor, tc.ceiling, got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzParseArms(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range append(files, "../examples/arms.yaml") {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		arms, err := ParseArms("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml:") {
				t.Fatalf("error does not name the file and line: %v", err)
			}
			return
		}
		if err := arms.Validate(); err != nil {
			t.Fatalf("ParseArms accepted an invalid set: %v", err)
		}
	})
}
