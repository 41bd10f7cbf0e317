package bandit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSnapshotRoundTrip(t *testing.T) {
	for _, post := range []Posterior{Gaussian, NormalInverseGamma} {
		t.Run(post.String(), func(t *testing.T) {
			snap, lp := trainedSnapshot(t, post, 6, 4, 500, 4)
			data, err := snap.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeSnapshot(data)
			if err != nil {
				t.Fatal(err)
			}
			if got.ModelID() != snap.ModelID() || got.Version() != snap.Version() || !got.Created().Equal(snap.Created()) ||
				got.Kind() != snap.Kind() || got.Dim() != snap.Dim() || !configEqual(got.Config(), snap.Config()) {
				t.Fatalf("header differs: %+v vs %+v", got.Config(), snap.Config())
			}
			for a := 0; a < snap.NumArms(); a++ {
				pg, _ := got.ArmPosterior(a)
				ps, _ := snap.ArmPosterior(a)
				if pg.Count != ps.Count || pg.Rate != ps.Rate {
					t.Errorf("arm %d: count/rate differ", a)
				}
				for i := range ps.Mean {
					if pg.Mean[i] != ps.Mean[i] {
						t.Errorf("arm %d mean[%d]: %v vs %v", a, i, pg.Mean[i], ps.Mean[i])
					}
				}
			}
			// The decoded snapshot makes the same choices from the same seed.
			r1, r2 := rand.New(rand.NewPCG(1, 2)), rand.New(rand.NewPCG(1, 2))
			for _, x := range benchContexts(lp, 200) {
				c1, _ := snap.Choose(x, snap.arms.All(), r1)
				c2, _ := got.Choose(x, got.arms.All(), r2)
				if c1 != c2 {
					t.Fatalf("choices differ: %+v vs %+v", c1, c2)
				}
			}
			again, _ := got.MarshalBinary()
			if !bytes.Equal(again, data) {
				t.Fatal("re-encoding a decoded snapshot changes it")
			}
			// A learner restored from it continues the version sequence.
			l, err := RestoreLearner(got)
			if err != nil {
				t.Fatal(err)
			}
			next, _ := l.Snapshot(time.Time{})
			if next.Version() != snap.Version()+1 {
				t.Fatalf("restored learner's next version %d, want %d", next.Version(), snap.Version()+1)
			}
		})
	}
}

func configEqual(a, b Config) bool {
	if len(a.Arms) != len(b.Arms) {
		return false
	}
	for i := range a.Arms {
		if a.Arms[i].Name != b.Arms[i].Name || a.Arms[i].Multiplier != b.Arms[i].Multiplier {
			return false
		}
	}
	return a.ModelID == b.ModelID && a.Dim == b.Dim && a.NoIntercept == b.NoIntercept && a.Posterior == b.Posterior &&
		a.Lambda == b.Lambda && a.Scale == b.Scale && a.PriorShape == b.PriorShape && a.PriorRate == b.PriorRate
}

// reseal recomputes the length and checksum of an edited encoding.
func reseal(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[6:], uint32(len(b)))
	body := b[:len(b)-4]
	binary.LittleEndian.PutUint32(b[len(body):], crc32.Checksum(body, castagnoli))
	return b
}

func TestDecodeSnapshotRejectsBadData(t *testing.T) {
	snap, _ := trainedSnapshot(t, Gaussian, 2, 3, 50, 1)
	good, _ := snap.MarshalBinary()
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	statsAt := len(good) - 4 - 3*(16+8*(6+3)) // first arm's count
	tests := map[string]struct {
		data []byte
		want error
	}{
		"empty":          {nil, ErrSnapshotIncompatible},
		"not a snapshot": {[]byte(`{"model":"x"}`), ErrSnapshotIncompatible},
		"newer format": {edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[4:], SnapshotFormat+1)
			return b
		}), ErrSnapshotIncompatible},
		"magic only":    {good[:4], ErrSnapshotTruncated},
		"half":          {good[:len(good)/2], ErrSnapshotTruncated},
		"last byte cut": {good[:len(good)-1], ErrSnapshotTruncated},
		"trailing byte": {append(append([]byte(nil), good...), 0), ErrSnapshotCorrupt},
		"flipped bit": {edit(func(b []byte) []byte {
			b[len(b)/2] ^= 0x10
			return b
		}), ErrSnapshotCorrupt},
		"bad checksum": {edit(func(b []byte) []byte {
			b[len(b)-1]++
			return b
		}), ErrSnapshotCorrupt},
		"NaN in statistics, resealed": {edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[statsAt+16:], math.Float64bits(math.NaN()))
			return reseal(b)
		}), ErrSnapshotCorrupt},
		"precision not positive definite, resealed": {edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[statsAt+16:], math.Float64bits(-1e6)) // Σx₁² < 0
			return reseal(b)
		}), ErrSnapshotCorrupt},
		"unsorted arms, resealed": {edit(func(b []byte) []byte {
			i := bytes.Index(b, []byte("ab")) + 2 // the second arm's multiplier
			binary.LittleEndian.PutUint64(b[i:], math.Float64bits(0.5))
			return reseal(b)
		}), ErrSnapshotCorrupt},
		"too many arms for the length, resealed": {edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[14:], 40)
			return reseal(b)
		}), ErrSnapshotCorrupt},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := DecodeSnapshot(tc.data)
			if !errors.Is(err, tc.want) || s != nil {
				t.Fatalf("got %v, %v; want an error wrapping %v", s, err, tc.want)
			}
			t.Log(err)
		})
	}
	// Every truncation and every single-byte change is caught.
	for n := 0; n < len(good); n++ {
		if _, err := DecodeSnapshot(good[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
	for i := range good {
		b := append([]byte(nil), good...)
		b[i] ^= 0xff
		if _, err := DecodeSnapshot(b); err == nil {
			t.Fatalf("byte %d changed: accepted", i)
		}
	}
}

// FuzzDecodeSnapshot checks that no input panics the decoder and that what
// it accepts re-encodes to the same bytes.
func FuzzDecodeSnapshot(f *testing.F) {
	for _, post := range []Posterior{Gaussian, NormalInverseGamma} {
		l, _ := NewLearner(Config{Dim: 2, Posterior: post, Arms: benchArms(2), Schema: 0xabcdef})
		l.Update([]float64{1, 2}, 0, 1)
		s, _ := l.Snapshot(time.Unix(100, 0))
		b, _ := s.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSnapshot(data)
		if err != nil {
			if s != nil {
				t.Fatal("snapshot and error")
			}
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, re-encoded as %x", data, again)
		}
		x := make([]float64, s.Dim())
		if _, err := s.Choose(x, s.arms.All(), rand.New(rand.NewPCG(1, 1))); err != nil {
			t.Fatalf("decoded snapshot cannot choose: %v", err)
		}
	})
}

// A snapshot carries the feature schema it was trained on; one written in
// format 1, before snapshots carried it, decodes with schema 0 (unknown)
// and otherwise unchanged.
func TestSnapshotSchemaAndFormat1(t *testing.T) {
	l, err := NewLearner(Config{ModelID: "m", Dim: 2, Schema: 0x1234abcd})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := l.Update([]float64{float64(i % 3), 1}, i%len(l.Config().Arms), float64(i%5)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := l.Snapshot(time.Unix(1e9, 0))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := snap.MarshalBinary()
	got, err := DecodeSnapshot(data)
	if err != nil || got.Schema() != 0x1234abcd || got.Config().Schema != 0x1234abcd {
		t.Fatalf("decoded schema %x, err %v; want 1234abcd", got.Schema(), err)
	}
	// The same snapshot in format 1: no schema field, format 1, length and
	// checksum rewritten.
	const schemaAt = 4 + 2 + 4 + 1 + 1 + 2 + 2 + 8 + 8
	old := append(append([]byte(nil), data[:schemaAt]...), data[schemaAt+8:len(data)-4]...)
	binary.LittleEndian.PutUint16(old[4:], 1)
	binary.LittleEndian.PutUint32(old[6:], uint32(len(old)+4))
	old = binary.LittleEndian.AppendUint32(old, crc32.Checksum(old, castagnoli))
	v1, err := DecodeSnapshot(old)
	if err != nil {
		t.Fatalf("format 1: %v", err)
	}
	if v1.Schema() != 0 || v1.Version() != snap.Version() || v1.Dim() != 2 {
		t.Errorf("format 1 decoded as schema %x version %d dim %d", v1.Schema(), v1.Version(), v1.Dim())
	}
	for a := range snap.NumArms() {
		p1, _ := v1.ArmPosterior(a)
		p2, _ := snap.ArmPosterior(a)
		if p1.Count != p2.Count || !slices.Equal(p1.Mean, p2.Mean) {
			t.Errorf("arm %d differs after format 1", a)
		}
	}
}

// TestFuzzSeedsAreSnapshots keeps the checked-in corpus honest: the seeds
// named valid_* decode.
func TestFuzzSeedsAreSnapshots(t *testing.T) {
	files, _ := filepath.Glob("testdata/fuzz/FuzzDecodeSnapshot/valid_*")
	if len(files) == 0 {
		t.Fatal("no valid_* seeds in testdata/fuzz/FuzzDecodeSnapshot")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data, err := parseCorpusBytes(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := DecodeSnapshot(data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// parseCorpusBytes reads a "go test fuzz v1" file holding one []byte.
func parseCorpusBytes(raw []byte) ([]byte, error) {
	s := strings.TrimSpace(string(raw))
	s, ok := strings.CutPrefix(s, "go test fuzz v1\n[]byte(")
	if !ok || !strings.HasSuffix(s, ")") {
		return nil, errors.New("not a go test fuzz v1 []byte file")
	}
	v, err := strconv.Unquote(strings.TrimSuffix(s, ")"))
	return []byte(v), err
}
