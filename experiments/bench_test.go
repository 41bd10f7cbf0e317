package experiments

import "testing"

func benchAssigner(b *testing.B) *Assigner {
	c, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	a, err := NewAssigner(c)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// benchUnits are distinct keys, so that the hash sees realistic input.
func benchUnits() []Unit {
	us := make([]Unit, 1024)
	for i := range us {
		us[i] = Unit{Key: "k_live_" + string(rune('a'+i%26)) + "0123456789abcdef" + key(i), Tenant: "acme", Tier: "free", Region: "eu-west-1"}
	}
	return us
}

// BenchmarkAssign is step 5 of the request path on the example file: the
// holdout, one layer, one experiment.
func BenchmarkAssign(b *testing.B) {
	a, us := benchAssigner(b), benchUnits()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.Primary(us[i&1023])
		i++
	}
}

func BenchmarkAssignAppend(b *testing.B) {
	a, us := benchAssigner(b), benchUnits()
	dst := make([]Assignment, 0, 4)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst = a.AssignAppend(dst[:0], us[i&1023])
		i++
	}
}

func BenchmarkAssignParallel(b *testing.B) {
	a, us := benchAssigner(b), benchUnits()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a.Primary(us[i&1023])
			i++
		}
	})
}

func BenchmarkNewAssigner(b *testing.B) {
	c, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewAssigner(c); err != nil {
			b.Fatal(err)
		}
	}
}
