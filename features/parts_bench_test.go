package features

import (
	"math"
	"testing"
)

var sinkF float64
var sinkV []float64

func partsState() keyState {
	st := newState(1e15)
	obs := benchObservations()
	for i := 0; i < 50; i++ {
		r := obs[i%len(obs)].request()
		st.observe(&r, 1e15+int64(i)*1000)
	}
	return st
}

func BenchmarkPartEntropy(b *testing.B) {
	st := partsState()
	for b.Loop() {
		sinkF += st.entropy()
	}
}
func BenchmarkPartAdvance(b *testing.B) {
	st := partsState()
	t := st.at
	for b.Loop() {
		t += 1000
		st.advance(t)
	}
}
func BenchmarkPartRaw(b *testing.B) {
	st := partsState()
	var raw [Dim]float64
	for b.Loop() {
		st.raw(st.at, 0, 1, &raw)
	}
	sinkF = raw[0]
}
func BenchmarkPartScale(b *testing.B) {
	st := partsState()
	var raw [Dim]float64
	st.raw(st.at, 0, 1, &raw)
	dst := make([]float64, 0, Dim)
	for b.Loop() {
		dst = scale(dst[:0], &raw)
	}
	sinkV = dst
}
func BenchmarkPartObserve(b *testing.B) {
	st := partsState()
	obs := benchObservations()
	t := st.at
	for i := 0; b.Loop(); i++ {
		t += 1000
		r := obs[i%len(obs)].request()
		st.observe(&r, t)
	}
}
func BenchmarkPartExp(b *testing.B) {
	x := 0.5
	for b.Loop() {
		sinkF += math.Exp(-x)
		x += 1e-9
	}
}
func BenchmarkPartLog(b *testing.B) {
	x := 0.5
	for b.Loop() {
		sinkF += math.Log(x)
		x += 1e-9
	}
}
func BenchmarkPartDecays(b *testing.B) {
	x := 0.5
	for b.Loop() {
		d := decays(x)
		sinkF += float64(d[0])
		x += 1e-9
	}
}
func BenchmarkPartFastLog(b *testing.B) {
	x := 0.5
	for b.Loop() {
		sinkF += fastLog(x)
		x += 1e-9
	}
}
func BenchmarkPartLog8(b *testing.B) {
	var xs [8]float64
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	for b.Loop() {
		for i := range xs {
			sinkF += math.Log(xs[i])
		}
	}
}
func BenchmarkPartFastLog8(b *testing.B) {
	var xs [8]float64
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	for b.Loop() {
		for i := range xs {
			sinkF += fastLog(xs[i])
		}
	}
}
