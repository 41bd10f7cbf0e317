// Package sim evaluates policies offline, before they meet traffic. So far
// it holds the wheel bandit of Riquelme, Tucker & Snoek 2018, the published
// benchmark the bandit package is checked against (RunWheel).
//
// Everything is deterministic: the same configuration and seed give the
// same results. Nothing here is safe for concurrent use unless stated.
package sim
