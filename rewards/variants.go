package rewards

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/devflow/flowguard/bandit"
)

// A VariantModel is the bandit of one experiment variant whose settings
// (arms, prior precision, posterior or reward mode) differ from the main
// model's: it is trained only on the epochs that variant enforced, and
// serving chooses that variant's arms from it alone.
//
// Serving stamps each decision of such a variant with the model's Key, and
// the learner trains the model of that key. The key holds a digest of the
// settings, so a learner whose experiments file is older or newer than
// serving's refuses the records (to the DLQ) instead of learning them into
// a model they were not drawn from, and a change of settings starts a new
// model from its prior.
type VariantModel struct {
	// ID names the variant: "experiment/variant". Required.
	ID string
	// Bandit is the variant's bandit. Its Dim must be the main model's.
	Bandit bandit.Config
	// Mode is provisional or wait. Default: provisional.
	Mode Mode
}

// Key identifies the model: its ID and a digest of the settings that shape
// its statistics. Exploration (bandit.Config.Scale) is not among them: it
// acts when sampling, so serving applies a variant's exploration per call
// and changing it keeps what the model learned.
func (v VariantModel) Key() string {
	c := v.Bandit
	mode := v.Mode
	if mode == "" {
		mode = ModeProvisional
	}
	arms := c.Arms
	if arms == nil {
		arms = bandit.DefaultArms()
	}
	lambda := c.Lambda
	if lambda == 0 {
		lambda = bandit.DefaultLambda
	}
	var b strings.Builder
	for _, a := range arms {
		b.WriteString(a.Name)
		b.WriteByte('=')
		b.WriteString(strconv.FormatFloat(a.Multiplier, 'g', -1, 64))
		b.WriteByte(',')
	}
	fmt.Fprintf(&b, "|%s|dim=%d|intercept=%t|%s|lambda=%s|a0=%s|b0=%s|%s",
		v.ID, c.Dim, !c.NoIntercept, c.Posterior, strconv.FormatFloat(lambda, 'g', -1, 64),
		strconv.FormatFloat(c.PriorShape, 'g', -1, 64), strconv.FormatFloat(c.PriorRate, 'g', -1, 64), mode)
	sum := sha256.Sum256([]byte(b.String()))
	return v.ID + "@" + hex.EncodeToString(sum[:4])
}

// validate reports the first problem of v, for a main model of dimension dim.
func (v VariantModel) validate(dim int) error {
	if v.ID == "" || len(v.ID) > 200 || strings.ContainsAny(v.ID, "@ \t\n") {
		return fmt.Errorf("rewards: variant model id %q must be 1 to 200 bytes without '@' or spaces", v.ID)
	}
	if err := v.Bandit.Validate(); err != nil {
		return fmt.Errorf("rewards: variant %s: %w", v.ID, err)
	}
	if v.Bandit.Dim != dim {
		return fmt.Errorf("rewards: variant %s has %d context features, the main model %d", v.ID, v.Bandit.Dim, dim)
	}
	if v.Mode != "" && v.Mode != ModeProvisional && v.Mode != ModeWait {
		return fmt.Errorf("rewards: variant %s: mode %q, want provisional or wait", v.ID, v.Mode)
	}
	if v.Mode != ModeWait && v.Bandit.Posterior == bandit.NormalInverseGamma {
		return fmt.Errorf("rewards: variant %s: provisional rewards need the gaussian posterior (its corrections are exact); use mode wait", v.ID)
	}
	return nil
}

// validateVariants checks a set of variant models: each valid, ids unique.
func validateVariants(vs []VariantModel, dim int) error {
	seen := make(map[string]bool, len(vs))
	for _, v := range vs {
		if err := v.validate(dim); err != nil {
			return err
		}
		if seen[v.ID] {
			return fmt.Errorf("rewards: two variant models named %s", v.ID)
		}
		seen[v.ID] = true
	}
	return nil
}

// model is one bandit a partition trains: the main one (key "") or a
// variant's.
type model struct {
	key  string
	mode Mode
	l    *bandit.Learner
	arms int
}

// newVariantModel returns a variant's model at its prior.
func newVariantModel(v VariantModel) (*model, error) {
	key := v.Key()
	c := v.Bandit
	c.ModelID = variantModelID(key)
	l, err := bandit.NewLearner(c)
	if err != nil {
		return nil, err
	}
	mode := v.Mode
	if mode == "" {
		mode = ModeProvisional
	}
	return &model{key: key, mode: mode, l: l, arms: len(l.Config().Arms)}, nil
}

// variantModelID is the bandit model id of a variant model's key: the
// key's digest (a bandit model id is at most 255 bytes, a key may be more).
func variantModelID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "flowguard-variant-" + hex.EncodeToString(sum[:8])
}

// ModelChanges says what SetVariants did to a partition's variant models.
type ModelChanges struct {
	Added, Removed []string // keys
}

// Empty reports whether nothing changed.
func (c ModelChanges) Empty() bool { return len(c.Added) == 0 && len(c.Removed) == 0 }

// SetVariants makes vs the partition's variant models: a model whose key
// is unchanged keeps what it learned; a new key (a new variant, or new
// settings of one) starts at its prior; a key no longer in vs is dropped,
// and later outcomes and labels of its epochs only teach the risk model.
// On error nothing changes.
func (p *Partition) SetVariants(vs []VariantModel) (ModelChanges, error) {
	if err := validateVariants(vs, p.cfg.Bandit.Dim); err != nil {
		return ModelChanges{}, err
	}
	var ch ModelChanges
	next := map[string]*model{"": p.models[""]}
	for _, v := range vs {
		k := v.Key()
		if m, ok := p.models[k]; ok {
			next[k] = m
			continue
		}
		m, err := newVariantModel(v)
		if err != nil {
			return ModelChanges{}, err
		}
		next[k] = m
		ch.Added = append(ch.Added, k)
	}
	for k := range p.models {
		if _, ok := next[k]; !ok {
			ch.Removed = append(ch.Removed, k)
		}
	}
	slices.Sort(ch.Added)
	slices.Sort(ch.Removed)
	p.models, p.cfg.Variants = next, slices.Clone(vs)
	return ch, nil
}

// VariantKeys returns the keys of the partition's variant models, sorted.
func (p *Partition) VariantKeys() []string {
	keys := make([]string, 0, len(p.models)-1)
	for k := range p.models {
		if k != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// errNoModel is wrapped by the error for a bandit record of a model the
// partition does not have.
var errNoModel = errors.New("no such model")
