package bandit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Limits of an arm set.
const (
	// MaxArms is the largest number of arms in a set.
	MaxArms = 64
	// MaxArmName is the longest arm name, in bytes.
	MaxArmName = 64
)

// ErrInvalidArms is wrapped by every arm-set validation error.
var ErrInvalidArms = errors.New("invalid arm set")

// An Arm is one choice the bandit can make: a named multiplier of a key's
// base request budget.
type Arm struct {
	// Name identifies the arm in logs, decisions and metrics, e.g. "x1.5".
	// It starts with a letter or digit and holds only letters, digits, '.',
	// '_' and '-'; at most MaxArmName bytes.
	Name string `yaml:"name"`
	// Multiplier scales the base budget; finite and positive.
	Multiplier float64 `yaml:"multiplier"`

	line int // YAML line, 0 when not parsed from YAML
}

// An ArmSet is the ordered list of arms a bandit chooses from. Multipliers
// are strictly increasing, so the arms allowed between a floor and a ceiling
// always form one contiguous ArmRange. Arms are referred to by their index.
//
// In YAML an arm set is a sequence of {name, multiplier} mappings:
//
//   - name: x0.5
//     multiplier: 0.5
//   - name: x1
//     multiplier: 1
type ArmSet []Arm

// DefaultArms returns the arm set used when none is configured:
// x0.25, x0.5, x1, x1.5, x2 and x4.
func DefaultArms() ArmSet {
	return ArmSet{
		{Name: "x0.25", Multiplier: 0.25},
		{Name: "x0.5", Multiplier: 0.5},
		{Name: "x1", Multiplier: 1},
		{Name: "x1.5", Multiplier: 1.5},
		{Name: "x2", Multiplier: 2},
		{Name: "x4", Multiplier: 4},
	}
}

// An ArmError reports an invalid arm. It wraps ErrInvalidArms.
type ArmError struct {
	Index  int    // position of the arm in the set
	Name   string // the arm's name, possibly empty
	Line   int    // YAML line of the arm, 0 if not parsed from YAML
	Reason string
}

func (e *ArmError) Error() string {
	return fmt.Sprintf("arm %d %q: %s", e.Index, e.Name, e.Reason)
}

func (e *ArmError) Unwrap() error { return ErrInvalidArms }

var armNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Validate reports the first problem with the set: no arms, more than
// MaxArms, a bad or duplicate name, or a multiplier that is not finite,
// positive and larger than the one before. Errors are *ArmError values (the
// empty and oversized set aside) and all wrap ErrInvalidArms.
func (s ArmSet) Validate() error {
	if len(s) == 0 {
		return fmt.Errorf("%w: no arms", ErrInvalidArms)
	}
	if len(s) > MaxArms {
		return fmt.Errorf("%w: %d arms, at most %d allowed", ErrInvalidArms, len(s), MaxArms)
	}
	seen := make(map[string]int, len(s))
	for i, a := range s {
		fail := func(format string, args ...any) error {
			return &ArmError{Index: i, Name: a.Name, Line: a.line, Reason: fmt.Sprintf(format, args...)}
		}
		switch {
		case a.Name == "":
			return fail("name is empty")
		case len(a.Name) > MaxArmName:
			return fail("name is %d bytes long, at most %d allowed", len(a.Name), MaxArmName)
		case !armNamePattern.MatchString(a.Name):
			return fail("name may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit")
		}
		if j, dup := seen[a.Name]; dup {
			return fail("duplicate name, also used by arm %d", j)
		}
		seen[a.Name] = i
		if math.IsNaN(a.Multiplier) || math.IsInf(a.Multiplier, 0) || a.Multiplier <= 0 {
			return fail("multiplier must be finite and positive, got %v", a.Multiplier)
		}
		if i > 0 && a.Multiplier <= s[i-1].Multiplier {
			if a.Multiplier == s[i-1].Multiplier {
				return fail("multiplier %v duplicates arm %d %q", a.Multiplier, i-1, s[i-1].Name)
			}
			return fail("multiplier %v is below arm %d %q (%v): arms must be sorted by increasing multiplier",
				a.Multiplier, i-1, s[i-1].Name, s[i-1].Multiplier)
		}
	}
	return nil
}

// Index returns the index of the arm with the given name.
func (s ArmSet) Index(name string) (int, bool) {
	for i, a := range s {
		if a.Name == name {
			return i, true
		}
	}
	return -1, false
}

// All returns the range of every arm in the set.
func (s ArmSet) All() ArmRange { return ArmRange{Lo: 0, Hi: len(s)} }

// Allowed returns the range of arms whose multiplier m satisfies
// floor ≤ m ≤ ceiling. Use 0 and math.Inf(1) for no bound. It returns
// ErrNoArm if no arm is inside the bounds, and an error if floor or ceiling
// is NaN or floor > ceiling. The set must be valid.
func (s ArmSet) Allowed(floor, ceiling float64) (ArmRange, error) {
	if math.IsNaN(floor) || math.IsNaN(ceiling) {
		return ArmRange{}, fmt.Errorf("bandit: floor %v or ceiling %v is NaN", floor, ceiling)
	}
	if floor > ceiling {
		return ArmRange{}, fmt.Errorf("bandit: floor %v above ceiling %v", floor, ceiling)
	}
	lo := 0
	for lo < len(s) && s[lo].Multiplier < floor {
		lo++
	}
	hi := lo
	for hi < len(s) && s[hi].Multiplier <= ceiling {
		hi++
	}
	if lo == hi {
		return ArmRange{}, fmt.Errorf("%w: no multiplier in [%v, %v]", ErrNoArm, floor, ceiling)
	}
	return ArmRange{Lo: lo, Hi: hi}, nil
}

// Nearest returns the index of the arm whose multiplier is closest to m
// (the lowest such index on a tie); s must not be empty.
func (s ArmSet) Nearest(m float64) int {
	best := 0
	for i, a := range s {
		if math.Abs(a.Multiplier-m) < math.Abs(s[best].Multiplier-m) {
			best = i
		}
	}
	return best
}

// Run returns where sub's arms sit in s: a contiguous run of s's arms, in
// order (names and multipliers equal). An empty sub is all of s. ok is
// false when sub is not such a run; the range is then all of s.
func (s ArmSet) Run(sub ArmSet) (r ArmRange, ok bool) {
	all := s.All()
	if len(sub) == 0 {
		return all, true
	}
	for lo := range s {
		if hi := lo + len(sub); hi <= len(s) && s[lo:hi].Equal(sub) {
			return ArmRange{Lo: lo, Hi: hi}, true
		}
	}
	return all, false
}

// clone returns a copy that shares no memory with s.
func (s ArmSet) clone() ArmSet {
	return append(ArmSet(nil), s...)
}

// An ArmRange is the half-open range [Lo, Hi) of arm indices a choice may
// use. The zero value allows no arm.
type ArmRange struct {
	Lo, Hi int
}

// Len returns the number of arms in the range.
func (r ArmRange) Len() int { return max(r.Hi-r.Lo, 0) }

// Contains reports whether arm index i is in the range.
func (r ArmRange) Contains(i int) bool { return i >= r.Lo && i < r.Hi }

// UnmarshalYAML decodes one arm strictly: unknown keys, missing keys and
// non-numeric multipliers are errors that name the line.
func (a *Arm) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: arm must be a mapping with name and multiplier", n.Line)
	}
	var out Arm
	out.line = n.Line
	var haveName, haveMult bool
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			if haveName {
				return fmt.Errorf("line %d: name given twice", k.Line)
			}
			if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
				return fmt.Errorf("line %d: name must be a string", v.Line)
			}
			out.Name, haveName = v.Value, true
		case "multiplier":
			if haveMult {
				return fmt.Errorf("line %d: multiplier given twice", k.Line)
			}
			if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!float") {
				return fmt.Errorf("line %d: multiplier must be a number, got %q", v.Line, v.Value)
			}
			f, err := strconv.ParseFloat(strings.ReplaceAll(v.Value, "_", ""), 64)
			if err != nil {
				return fmt.Errorf("line %d: multiplier must be a number, got %q", v.Line, v.Value)
			}
			out.Multiplier, haveMult = f, true
		default:
			return fmt.Errorf("line %d: unknown field %q in arm (valid: name, multiplier)", k.Line, k.Value)
		}
	}
	if !haveName {
		return fmt.Errorf("line %d: arm has no name", n.Line)
	}
	if !haveMult {
		return fmt.Errorf("line %d: arm %q has no multiplier", n.Line, out.Name)
	}
	*a = out
	return nil
}

// armsFile is the layout of a standalone arms file.
type armsFile struct {
	Arms ArmSet `yaml:"arms"`
}

var yamlLinePattern = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// ParseArms decodes and validates a standalone arms file,
//
//	arms:
//	  - name: x0.5
//	    multiplier: 0.5
//	  - name: x1
//	    multiplier: 1
//
// Unknown keys are errors. Every error starts with "name:line: ", where name
// is the file name given, so a command can print it as is.
func ParseArms(name string, data []byte) (ArmSet, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f armsFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s:1: empty file, want an arms list", name)
		}
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d: more than one YAML document", name, extra.Line)
	}
	if f.Arms == nil {
		return nil, fmt.Errorf("%s:1: no arms list", name)
	}
	if err := f.Arms.Validate(); err != nil {
		var ae *ArmError
		if errors.As(err, &ae) {
			return nil, fmt.Errorf("%s:%d: %w", name, ae.Line, err)
		}
		return nil, fmt.Errorf("%s:1: %w", name, err)
	}
	return f.Arms, nil
}

// yamlError rewrites a yaml.v3 error as "name:line: message", one line per
// problem.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for i, m := range msgs {
		line := "1"
		if g := yamlLinePattern.FindStringSubmatch(m); g != nil {
			line, m = g[1], m[len(g[0]):]
		}
		m = strings.TrimPrefix(m, "yaml: ")
		msgs[i] = fmt.Sprintf("%s:%s: %s", name, line, m)
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// Equal reports whether a and b are the same arms (names and
// multipliers) in the same order, wherever they were read from.
func (a ArmSet) Equal(b ArmSet) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Multiplier != b[i].Multiplier {
			return false
		}
	}
	return true
}
