package bandit

import "math"

// Small dense linear algebra on packed lower-triangular matrices: element
// (i, j), j ≤ i, of a p×p matrix is at i(i+1)/2 + j, so row i is the
// contiguous slice [i(i+1)/2, i(i+1)/2+i]. Symmetric matrices store their
// lower half. These routines run when a snapshot is built, never per choice,
// and do not allocate.

// packedLen returns the length of a packed p×p triangle.
func packedLen(p int) int { return p * (p + 1) / 2 }

// row returns row i of packed triangle m: elements (i, 0..i).
func row(m []float64, i int) []float64 {
	s := i * (i + 1) / 2
	return m[s : s+i+1 : s+i+1]
}

// cholesky writes into l the lower Cholesky factor of the symmetric matrix
// a + lambda·I (a packed). It returns the first pivot index at which the
// matrix is not numerically positive definite, or -1 on success.
func cholesky(l, a []float64, lambda float64, p int) int {
	for j := 0; j < p; j++ {
		lj := row(l, j)
		for i := j; i < p; i++ {
			li := row(l, i)
			s := row(a, i)[j]
			if i == j {
				s += lambda
			}
			for k := 0; k < j; k++ {
				s -= li[k] * lj[k]
			}
			if i == j {
				if !(s > 0) || math.IsInf(s, 0) {
					return j
				}
				li[j] = math.Sqrt(s)
			} else {
				li[j] = s / lj[j]
			}
		}
	}
	return -1
}

// solveCholesky solves (L Lᵀ) x = b for x; b and x may alias.
func solveCholesky(x, l, b []float64, p int) {
	// Forward: L y = b, in place in x.
	copy(x, b[:p])
	for i := 0; i < p; i++ {
		li := row(l, i)
		s := x[i]
		for k := 0; k < i; k++ {
			s -= li[k] * x[k]
		}
		x[i] = s / li[i]
	}
	// Backward: Lᵀ x = y.
	for i := p - 1; i >= 0; i-- {
		s := x[i]
		for k := i + 1; k < p; k++ {
			s -= row(l, k)[i] * x[k]
		}
		x[i] = s / row(l, i)[i]
	}
}

// invertLower writes into inv the inverse of the lower-triangular l.
func invertLower(inv, l []float64, p int) {
	for i := 0; i < p; i++ {
		li := row(l, i)
		xi := row(inv, i)
		d := 1 / li[i]
		xi[i] = d
		for j := 0; j < i; j++ {
			s := 0.0
			for k := j; k < i; k++ {
				s += li[k] * row(inv, k)[j]
			}
			xi[j] = -s * d
		}
	}
}

// quadForm returns ‖L⁻¹x‖² = xᵀB⁻¹x for the packed inverse factor inv and a
// context x of length p, or p-1 with an implicit trailing 1 when intercept
// is set.
func quadForm(inv, x []float64, p int, intercept bool) float64 {
	q := 0.0
	d := p
	if intercept {
		d = p - 1
	}
	x = x[:d]
	off := 0
	for i := 0; i < d; i++ {
		r := inv[off : off+i+1 : off+i+1]
		s := 0.0
		for k, v := range r[:i+1] {
			s += v * x[k]
		}
		q += s * s
		off += i + 1
	}
	if intercept {
		r := inv[off : off+p : off+p]
		s := r[d]
		for k, v := range r[:d] {
			s += v * x[k]
		}
		q += s * s
	}
	return q
}

// dot returns μᵀx with an implicit trailing 1 in x when intercept is set.
func dot(mu, x []float64, intercept bool) float64 {
	s := 0.0
	if intercept {
		s = mu[len(mu)-1]
		mu = mu[:len(mu)-1]
	}
	x = x[:len(mu)]
	for k, v := range mu {
		s += v * x[k]
	}
	return s
}
