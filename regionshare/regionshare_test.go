package regionshare

import (
	"context"
	"errors"
	"github.com/devflow/flowguard/limiter"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestRegionShareSumsToOne(t *testing.T) {
	cases := map[string]struct {
		counts   []float64
		minShare float64
		want     []float64
	}{
		"one region":        {counts: []float64{5}, minShare: 0.05, want: []float64{1}},
		"no traffic":        {counts: []float64{0, 0, 0}, minShare: 0.05, want: []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}},
		"all in one region": {counts: []float64{10, 0, 0}, minShare: 0.05, want: []float64{0.9, 0.05, 0.05}},
		"even":              {counts: []float64{4, 4}, minShare: 0.1, want: []float64{0.5, 0.5}},
		"60/30/10":          {counts: []float64{6, 3, 1}, minShare: 0.1, want: []float64{0.1 + 0.7*0.6, 0.1 + 0.7*0.3, 0.1 + 0.7*0.1}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			total := 0.0
			for _, v := range c.counts {
				total += v
			}
			sum := 0.0
			for i, v := range c.counts {
				got := RegionShare(v, total, len(c.counts), c.minShare)
				if math.Abs(got-c.want[i]) > 1e-12 {
					t.Errorf("region %d: share %v, want %v", i, got, c.want[i])
				}
				sum += got
			}
			if math.Abs(sum-1) > 1e-12 {
				t.Errorf("shares sum to %v, want 1", sum)
			}
		})
	}
}

func beat(region, inst string, tick int64, counts map[string]float64) *Heartbeat {
	return &Heartbeat{Region: region, Instance: inst, Tick: tick, EveryMS: 1000, Counts: counts}
}

func TestRegionBookDeadRegionShareTakenOver(t *testing.T) {
	books := map[string]*RegionBook{}
	regions := []string{"a", "b", "c"}
	for _, r := range regions {
		books[r] = NewRegionBook(r, 0.05, 3)
	}
	send := func(h *Heartbeat) {
		for _, b := range books {
			b.Add(h)
		}
	}
	for tick := int64(1); tick <= 10; tick++ {
		send(beat("a", "1", tick, map[string]float64{"k": 30}))
		send(beat("a", "2", tick, map[string]float64{"k": 30}))
		send(beat("b", "1", tick, map[string]float64{"k": 30}))
		if tick <= 5 { // c stops after tick 5
			send(beat("c", "1", tick, map[string]float64{"k": 10}))
		}
		next := tick + 1
		a, b := books["a"].Shares(next), books["b"].Shares(next)
		switch {
		case tick <= 4: // everyone live and computing
			if sum := a.Of("k") + b.Of("k") + books["c"].Shares(next).Of("k"); math.Abs(sum-1) > 1e-12 {
				t.Errorf("tick %d: shares sum to %v, want 1", next, sum)
			}
			if math.Abs(a.Of("k")-(0.05+0.85*0.6)) > 1e-12 {
				t.Errorf("tick %d: a's share %v, want 0.05 + (1−3·0.05)·0.6", next, a.Of("k"))
			}
		case next <= 8: // c's tick-5 beat keeps it live 3 ticks: its share goes unused
			if got := books["a"].Live(next); len(got) != 3 {
				t.Errorf("live at tick %d: %v, want a, b, c", next, got)
			}
			if sum := a.Of("k") + b.Of("k"); sum >= 1 {
				t.Errorf("tick %d: a + b = %v, want below 1 while c is not yet dead", next, sum)
			}
		default: // c is dead: a and b share the whole budget
			if got := books["a"].Live(next); len(got) != 2 {
				t.Errorf("live at tick %d: %v, want a, b", next, got)
			}
			if math.Abs(a.Of("k")-(0.05+0.9*60.0/90)) > 1e-12 || math.Abs(a.Of("k")+b.Of("k")-1) > 1e-12 {
				t.Errorf("tick %d, c dead: a %v, b %v; want a = 0.05+0.9·2/3 and a+b = 1", next, a.Of("k"), b.Of("k"))
			}
			if got := a.Of("never-seen"); got != 0.5 {
				t.Errorf("a key nobody counted: share %v, want 1/2", got)
			}
		}
	}
	if !books["a"].Heard(11) || books["c"].Heard(11) {
		t.Error("Heard: a hears itself, c (whose own beats stopped at tick 5) must not")
	}
	// A beat of the next tick that arrives early does not hide the one in use.
	books["b"].Add(beat("a", "1", 12, map[string]float64{"k": 1}))
	if got := books["b"].Live(11); len(got) != 2 {
		t.Errorf("after an early beat: live %v, want a, b", got)
	}
}

func TestDecodeHeartbeat(t *testing.T) {
	h := beat("us-east-1", "i-1", 7, map[string]float64{"k_live_1": 3.5})
	data, err := EncodeHeartbeat(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHeartbeat(data)
	if err != nil || got.Region != h.Region || got.Tick != 7 || got.Counts["k_live_1"] != 3.5 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, bad := range map[string]string{
		"not json":     `{`,
		"no region":    `{"instance":"a","tick":1,"every_ms":1}`,
		"negative":     `{"region":"r","instance":"a","tick":1,"every_ms":1,"counts":{"k":-2}}`,
		"zero every":   `{"region":"r","instance":"a","tick":1,"every_ms":0}`,
		"unicode name": `{"region":"régïon","instance":"a","tick":1,"every_ms":1}`,
	} {
		if _, err := DecodeHeartbeat([]byte(bad)); !errors.Is(err, ErrBadHeartbeat) {
			t.Errorf("%s: error %v, want ErrBadHeartbeat", name, err)
		}
	}
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add([]byte(`{"region":"us-east-1","instance":"i-1","tick":1700000000,"every_ms":1000,"counts":{"k":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHeartbeat(data)
		if err != nil {
			if !errors.Is(err, ErrBadHeartbeat) {
				t.Fatalf("error %v does not wrap ErrBadHeartbeat", err)
			}
			return
		}
		again, err := EncodeHeartbeat(h)
		if err != nil {
			t.Fatalf("a decoded heartbeat does not encode: %v", err)
		}
		if _, err := DecodeHeartbeat(again); err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		b := NewRegionBook("x", 0.05, 3)
		b.Add(h)
		tab := b.Shares(h.Tick + 1)
		for k := range h.Counts {
			if s := tab.Of(k); !(s > 0 && s <= 1) {
				t.Fatalf("share %v of %q out of (0, 1]", s, k)
			}
		}
	})
}

// TestRegionBudgetBound simulates three regions enforcing their shares of
// one key's budget, each against its own store, while the traffic mix moves
// and one region dies and comes back, with heartbeats delivered after a
// random lag under one tick. Over every window W the total admitted must
// stay within (1+ε)·Rate·W + R·Burst + R with ε = 0.
func TestRegionBudgetBound(t *testing.T) {
	const (
		regions  = 3
		every    = 200 * time.Millisecond
		window   = 2 * time.Second
		minShare = 0.05
		step     = time.Millisecond
		total    = 60 * time.Second
	)
	limit := limiter.Limit{Rate: 100, Burst: 50, Period: time.Second}
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	names := []string{"a", "b", "c"}
	type region struct {
		store  *limiter.MemoryStore
		book   *RegionBook
		table  *ShareTable
		counts float64 // decayed
		fresh  float64 // this tick
		dead   bool
		warm   bool
	}
	rs := make([]*region, regions)
	for i := range rs {
		rs[i] = &region{store: limiter.NewMemoryStore(limiter.MemoryOptions{Clock: clock, SweepEvery: -1}),
			book: NewRegionBook(names[i], minShare, 5), table: FixedShares(0, minShare)}
		defer rs[i].store.Close()
	}
	type pending struct {
		at time.Time
		to int
		h  *Heartbeat
	}
	var queue []pending
	decay := math.Exp(-float64(every) / float64(window))
	var admitted []int64 // per step
	tickOf := func(t time.Time) int64 { return t.UnixNano() / int64(every) }
	lastTick := tickOf(now)
	key := limiter.Key{Name: "k"}
	for s := 0; s < int(total/step); s++ {
		now = now.Add(step)
		sec := int(now.Sub(time.Unix(1_700_000_000, 0)) / time.Second)
		rs[2].dead = sec >= 20 && sec < 35
		if sec == 35 && rs[2].store != nil && !rs[2].warm {
			// c comes back with an empty store (its Redis died with it)
			// and an empty book, on the floor share until it hears itself.
			rs[2].store.Close()
			rs[2].store = limiter.NewMemoryStore(limiter.MemoryOptions{Clock: clock, SweepEvery: -1})
			rs[2].book = NewRegionBook("c", minShare, 5)
			rs[2].table, rs[2].counts, rs[2].warm = FixedShares(0, minShare), 0, true
		}
		if k := tickOf(now); k != lastTick {
			lastTick = k
			for i, r := range rs {
				if r.dead {
					continue
				}
				r.counts = r.counts*decay + r.fresh
				r.fresh = 0
				h := beat(names[i], "1", k, map[string]float64{"k": r.counts})
				for j := range rs {
					queue = append(queue, pending{at: now.Add(time.Duration(rng.Int64N(int64(every) - 1))), to: j, h: h})
				}
			}
			for _, r := range rs {
				if r.dead {
					continue
				}
				if r.book.Heard(k) {
					r.table = r.book.Shares(k)
				}
			}
		}
		rest := queue[:0]
		for _, p := range queue {
			if p.at.After(now) {
				rest = append(rest, p)
				continue
			}
			if !rs[p.to].dead {
				rs[p.to].book.Add(p.h)
			}
		}
		queue = rest
		// Demand: 3× the budget overall, its mix moving every 5 s.
		phase := (sec / 5) % 3
		var got int64
		for i, r := range rs {
			if r.dead {
				continue
			}
			weight := []float64{0.6, 0.3, 0.1}[(i+phase)%3]
			if rng.Float64() < weight*0.3 { // 300 req/s × weight
				r.fresh++
				res, err := r.store.Allow(context.Background(), key, limit.Scale(r.table.Of("k")), 1)
				if err != nil {
					t.Fatal(err)
				}
				got += res.Allowed
			}
		}
		admitted = append(admitted, got)
	}
	for _, w := range []time.Duration{100 * time.Millisecond, time.Second, 5 * time.Second, 20 * time.Second, total} {
		n := int(w / step)
		sum := int64(0)
		worst := int64(0)
		for i, a := range admitted {
			sum += a
			if i >= n {
				sum -= admitted[i-n]
			}
			worst = max(worst, sum)
		}
		bound := float64(limit.Rate)*w.Seconds() + regions*float64(limit.Burst) + regions
		t.Logf("window %-6s admitted at most %5d, bound %7.0f (budget alone %7.0f)", w, worst, bound, float64(limit.Rate)*w.Seconds()+float64(limit.Burst))
		if float64(worst) > bound {
			t.Errorf("window %s: %d admitted, above the bound %.0f", w, worst, bound)
		}
	}
}
