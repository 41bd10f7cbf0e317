// Package examples holds flowguard's example configuration. The embedded
// default — what `flowguard serve` runs with no --config — is built from
// these files, so the examples always load.
package examples

import "embed"

// Policies is examples/policies.yaml: service settings and tenant policies.
//
//go:embed policies.yaml
var Policies []byte

// PoliciesName is how errors and logs name the embedded file.
const PoliciesName = "examples/policies.yaml (embedded)"

// Experiments is examples/experiments.yaml: the A/B experiments of the
// embedded default.
//
//go:embed experiments.yaml
var Experiments []byte

// ExperimentsName is how errors and logs name the embedded experiments file.
const ExperimentsName = "examples/experiments.yaml (embedded)"

// Scenarios are the simulator's example scenarios (examples/scenarios):
// `flowguard sim --scenario default` runs the embedded default.yaml.
//
//go:embed scenarios/*.yaml
var Scenarios embed.FS
