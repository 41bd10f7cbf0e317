// Package docscheck holds tests that keep the documentation true to the
// code: the configuration reference (docs/configuration.md) against the
// defaults internal/config applies, and the links and repository paths of
// README.md and docs/ against the tree. It has no code of its own; the
// README's sample outputs are checked in cmd/flowguard, which can run the
// commands in-process.
package docscheck
