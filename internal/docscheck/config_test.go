package docscheck

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/policy"
)

// configDoc is the configuration reference the test reads.
const configDoc = "../../docs/configuration.md"

// TestConfigurationReference checks docs/configuration.md against the
// code, both ways: every key the configuration file has (found by walking
// the yaml tags of config.File) has a row in a table, every row names a
// real key, every default in backticks is the value the code gives a file
// that leaves the key out, and every key documented as required is refused
// when missing.
func TestConfigurationReference(t *testing.T) {
	rows := readConfigTables(t, configDoc)
	code := codeDefaults(t)
	documented := map[string]bool{}
	for _, r := range rows {
		documented[r.key] = true
		c, ok := code[r.key]
		if !ok {
			t.Errorf("%s:%d: %s: no such key in the configuration (config.File)", configDoc, r.line, r.key)
			continue
		}
		if err := checkDefault(r, c, code); err != nil {
			t.Errorf("%s:%d: %s: %v", configDoc, r.line, r.key, err)
		}
	}
	for _, key := range sortedKeys(code) {
		if !documented[key] {
			t.Errorf("%s: key %s is in the code (default %s) but has no row in the reference", configDoc, key, describe(code[key]))
		}
	}
}

// row is one table row of the reference: a key (with its section's
// prefix) and its default cell.
type row struct {
	key, section, cell string
	line               int
}

var (
	sectionHeading = regexp.MustCompile("^#{2,4} `([a-zA-Z_.A-Z]+)`")
	keyCell        = regexp.MustCompile("^`([a-z_.]+)`$")
	firstLiteral   = regexp.MustCompile("`([^`]*)`")
	reference      = regexp.MustCompile("^as `([a-z_.]+)`")
)

// readConfigTables returns the rows of every table under a heading that
// names a section in backticks ("### `redis`").
func readConfigTables(t *testing.T, path string) []row {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []row
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			section = ""
			if m := sectionHeading.FindStringSubmatch(line); m != nil {
				section = m[1]
			}
			continue
		}
		if section == "" || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		if cells[0] == "key" || strings.HasPrefix(cells[0], "---") {
			continue
		}
		if len(cells) != 3 {
			t.Errorf("%s:%d: a row has key | default | meaning, this one has %d cells (a '|' in a cell?)", path, i+1, len(cells))
			continue
		}
		m := keyCell.FindStringSubmatch(cells[0])
		if m == nil {
			t.Errorf("%s:%d: the key cell %q is not one key in backticks", path, i+1, cells[0])
			continue
		}
		rows = append(rows, row{key: section + "." + m[1], section: section, cell: cells[1], line: i + 1})
	}
	if len(rows) < 50 {
		t.Fatalf("%s: only %d rows read: has the format of the tables changed?", path, len(rows))
	}
	return rows
}

// codeKey is a key of the configuration file and what the code gives it.
type codeKey struct {
	// value is the key's value in a probe file that leaves it out.
	value reflect.Value
	// effective, when set, checks a documented default the configuration
	// leaves zero and a downstream package fills in.
	effective func(lit string) error
	// probe and path locate the key for the "required" check: the probe
	// that sets it, and where.
	probe func() map[string]any
	path  []string
}

// Probes: the smallest files that have every section. A leaves out
// regions, which needs a server.region; B has it.
func probeA() map[string]any {
	return map[string]any{
		"server": map[string]any{},
		"redis":  map[string]any{"addrs": []any{"127.0.0.1:6379"}},
		"kafka": map[string]any{"brokers": []any{"127.0.0.1:9092"},
			"sasl": map[string]any{"mechanism": "plain", "password_env": "FLOWGUARD_DOCS_SASL"}},
		"ml":          map[string]any{},
		"audit":       map[string]any{},
		"experiments": map[string]any{},
		"policies": map[string]any{
			"tiers":   map[string]any{"free": map[string]any{"rate": 7}},
			"tenants": map[string]any{"t": map[string]any{}},
		},
	}
}

func probeB() map[string]any {
	return map[string]any{
		"server":   map[string]any{"region": "a"},
		"kafka":    map[string]any{"brokers": []any{"127.0.0.1:9092"}},
		"regions":  map[string]any{"peers": []any{"b"}},
		"policies": map[string]any{"tiers": map[string]any{"free": map[string]any{"rate": 7}}},
	}
}

func parseProbe(p map[string]any) (*config.Loaded, error) {
	data, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	return config.Parse("probe.yaml", data)
}

// codeDefaults returns every key of the configuration file with the value
// the code gives it.
func codeDefaults(t *testing.T) map[string]codeKey {
	t.Helper()
	a, err := parseProbe(probeA())
	if err != nil {
		t.Fatalf("probe A: %v", err)
	}
	b, err := parseProbe(probeB())
	if err != nil {
		t.Fatalf("probe B: %v", err)
	}
	keys := map[string]codeKey{}
	fileT := reflect.TypeFor[config.File]()
	for i := range fileT.NumField() {
		f := fileT.Field(i)
		name := yamlName(f)
		switch name {
		case "policies":
			continue // below: its defaults live in the compiled rules
		case "regions":
			walk(keys, name, reflect.ValueOf(b.File).Field(i), probeB, []string{name})
		default:
			walk(keys, name, reflect.ValueOf(a.File).Field(i), probeA, []string{name})
		}
	}
	// open_for's default is filled in by the limiter, not the
	// configuration: check it by behaviour.
	c := keys["redis.breaker.open_for"]
	c.effective = breakerOpenFor(c.value)
	keys["redis.breaker.open_for"] = c
	policyDefaults(t, keys, a, b)
	return keys
}

// walk adds the keys under v (a struct or a pointer to one; nil pointers
// are walked by type) to keys.
func walk(keys map[string]codeKey, prefix string, v reflect.Value, probe func() map[string]any, path []string) {
	typ := v.Type()
	if typ.Kind() == reflect.Pointer && typ.Elem().Kind() == reflect.Struct {
		if v.IsNil() {
			v = reflect.Zero(typ.Elem())
		} else {
			v = v.Elem()
		}
		typ = v.Type()
	}
	if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[time.Duration]() {
		keys[prefix] = codeKey{value: v, probe: probe, path: path}
		return
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := yamlName(f)
		if name == "" || !f.IsExported() {
			continue
		}
		walk(keys, prefix+"."+name, v.Field(i), probe, append(append([]string(nil), path...), name))
	}
}

// policyDefaults adds the policies keys: names from policy.Doc's yaml tags,
// values from the compiled policy set, where the defaults are applied.
func policyDefaults(t *testing.T, keys map[string]codeKey, a, b *config.Loaded) {
	t.Helper()
	free := a.Policies.DefaultTier()
	tenant := a.Policies.Resolve("t", "GET /x")
	spec := map[string]any{
		"rate":       free.Limit.Rate,
		"period":     free.Limit.Period,
		"burst":      free.Limit.Burst,
		"floor":      free.Floor,
		"ceiling":    free.Ceiling,
		"ml":         string(free.ML),
		"auto_block": free.AutoBlock,
		"audit":      free.Audit,
		"class":      string(free.Class),
		"endpoints":  a.File.Policies.Tiers["free"].Endpoints,
		"daily_quota": map[bool]string{true: policy.DailyFitted, false: map[bool]string{true: fmt.Sprint(free.Daily),
			false: policy.DailyOff}[free.Daily > 0]}[free.DailyFitted],
	}
	tierPath := []string{"policies", "tiers", "free"}
	for _, name := range yamlNames(reflect.TypeFor[policy.Spec]()) {
		v, ok := spec[name]
		if !ok {
			t.Errorf("policies.tiers.NAME.%s: a policy key this test cannot read the default of: add it to spec in policyDefaults", name)
			continue
		}
		keys["policies.tiers.NAME."+name] = codeKey{value: reflect.ValueOf(v), probe: probeA, path: append(append([]string(nil), tierPath...), name)}
	}
	doc := map[string]any{
		"default_tier": free.Tier,
		"tiers":        a.File.Policies.Tiers,
		"tenants":      b.File.Policies.Tenants,
		"deny":         b.File.Policies.Deny,
		"allow":        b.File.Policies.Allow,
	}
	for _, name := range yamlNames(reflect.TypeFor[policy.Doc]()) {
		v, ok := doc[name]
		if !ok {
			t.Errorf("policies.%s: a policy key this test cannot read the default of: add it to doc in policyDefaults", name)
			continue
		}
		keys["policies."+name] = codeKey{value: reflect.ValueOf(v), probe: probeA, path: []string{"policies", name}}
	}
	for _, name := range yamlNames(reflect.TypeFor[policy.Tenant]()) {
		if name != "tier" {
			t.Errorf("policies.tenants.NAME.%s: a tenant key this test cannot read the default of", name)
			continue
		}
		keys["policies.tenants.NAME.tier"] = codeKey{value: reflect.ValueOf(tenant.Tier)}
	}
}

// breakerOpenFor checks the documented default of redis.breaker.open_for
// by behaviour: the configuration passes zero, limiter.NewBreaker fills it
// in, and the first half-open probe is let through exactly then.
func breakerOpenFor(configured reflect.Value) func(lit string) error {
	return func(lit string) error {
		want, err := time.ParseDuration(lit)
		if err != nil {
			return err
		}
		now := time.Unix(0, 0)
		b := limiter.NewBreaker(limiter.BreakerOptions{OpenFor: time.Duration(configured.Int()), MinCalls: 1,
			Clock: func() time.Time { return now }})
		if !b.Failure() {
			return fmt.Errorf("one failure of one call did not open the breaker")
		}
		now = now.Add(want - time.Nanosecond)
		early := b.Allow()
		now = now.Add(time.Nanosecond)
		if early || !b.Allow() {
			return fmt.Errorf("documented %s, the breaker's first probe is not let through exactly then", want)
		}
		return nil
	}
}

// checkDefault compares a row's default cell with the code.
func checkDefault(r row, c codeKey, code map[string]codeKey) error {
	switch {
	case strings.HasPrefix(r.cell, "required"):
		return checkRequired(r, c)
	case reference.MatchString(r.cell):
		other := reference.FindStringSubmatch(r.cell)[1]
		ref, ok := lookup(code, r.section, other)
		if !ok {
			return fmt.Errorf("default %q names no key", r.cell)
		}
		if got, want := describe(c), describe(ref); got != want {
			return fmt.Errorf("documented as %s (%s), but the code gives %s", other, want, got)
		}
		return nil
	}
	m := firstLiteral.FindStringSubmatch(r.cell)
	if m == nil {
		return fmt.Errorf("default %q has no value in backticks, nor says required or as `key`", r.cell)
	}
	if c.effective != nil {
		return c.effective(m[1])
	}
	return sameValue(c.value, m[1])
}

// lookup finds key relative to section, then to each enclosing section.
func lookup(code map[string]codeKey, section, key string) (codeKey, bool) {
	for s := section; ; {
		if c, ok := code[s+"."+key]; ok {
			return c, true
		}
		i := strings.LastIndex(s, ".")
		if i < 0 {
			c, ok := code[key]
			return c, ok
		}
		s = s[:i]
	}
}

// checkRequired removes the key from its probe and expects the file to be
// refused with an error that names it.
func checkRequired(r row, c codeKey) error {
	if c.probe == nil {
		return fmt.Errorf("documented as required, but the test has no probe that sets it")
	}
	probe := c.probe()
	m := probe
	for _, p := range c.path[:len(c.path)-1] {
		m = m[p].(map[string]any)
	}
	last := c.path[len(c.path)-1]
	if _, ok := m[last]; !ok {
		return fmt.Errorf("documented as required, but a file without it loads (default %s)", describe(c))
	}
	delete(m, last)
	_, err := parseProbe(probe)
	if err == nil {
		return fmt.Errorf("documented as required, but a file without it loads")
	}
	if !strings.Contains(err.Error(), last) {
		return fmt.Errorf("documented as required; a file without it is refused, but the error does not name it: %v", err)
	}
	return nil
}

// sameValue reports whether the documented literal lit is v.
func sameValue(v reflect.Value, lit string) error {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return sameText(v, lit, "none")
		}
		v = v.Elem()
	}
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(lit)
		if err != nil {
			return fmt.Errorf("default %q is not a duration", lit)
		}
		if time.Duration(v.Int()) != d {
			return fmt.Errorf("documented %s, the code's default is %s", d, time.Duration(v.Int()))
		}
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if lit == `""` {
			lit = ""
		}
		if v.String() != lit {
			return fmt.Errorf("documented %q, the code's default is %q", lit, v.String())
		}
		return nil
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil || n != v.Int() {
			return fmt.Errorf("documented %s, the code's default is %d", lit, v.Int())
		}
		return nil
	case reflect.Float64:
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil || f != v.Float() {
			return fmt.Errorf("documented %s, the code's default is %v", lit, v.Float())
		}
		return nil
	case reflect.Bool:
		b, err := strconv.ParseBool(lit)
		if err != nil || b != v.Bool() {
			return fmt.Errorf("documented %s, the code's default is %v", lit, v.Bool())
		}
		return nil
	}
	return sameText(v, lit, format(v))
}

func sameText(v reflect.Value, lit, got string) error {
	if lit != got {
		return fmt.Errorf("documented %s, the code's default is %s", lit, got)
	}
	return nil
}

// format writes a composite default the way the reference does: [a, b]
// for a list (of names, for named elements), {k: v, …} sorted by key.
func format(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			e := v.Index(i)
			if e.Kind() == reflect.Struct && e.FieldByName("Name").IsValid() {
				parts[i] = e.FieldByName("Name").String()
			} else {
				parts[i] = fmt.Sprint(e.Interface())
			}
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		var parts []string
		for _, k := range v.MapKeys() {
			e := v.MapIndex(k)
			s := fmt.Sprint(e.Interface())
			if e.Kind() == reflect.Float64 {
				s = strconv.FormatFloat(e.Float(), 'g', -1, 64)
			}
			parts = append(parts, k.String()+": "+s)
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}

// describe is a code default as a message shows it.
func describe(c codeKey) string {
	v := c.value
	if !v.IsValid() {
		return "(none)"
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "none"
		}
		v = v.Elem()
	}
	if v.Type() == reflect.TypeFor[time.Duration]() {
		return time.Duration(v.Int()).String()
	}
	if v.Kind() == reflect.String {
		return strconv.Quote(v.String())
	}
	return format(v)
}

// yamlName is a struct field's key in the file; "" for inline or skipped
// fields.
func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	name, opts, _ := strings.Cut(tag, ",")
	if name == "-" || strings.Contains(opts, "inline") {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// yamlNames returns the keys of a struct type's fields, inline ones left
// out.
func yamlNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" && t.Field(i).IsExported() {
			names = append(names, n)
		}
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
