package features

import "sync"

// shard is one lock's share of the keys: key states in a slab, found
// through an open-addressing index of key hashes (linear probing,
// backward-shift deletion, at most 3/4 full). A lookup touches one index
// entry, usually in one cache line, and then the state. An index entry is
// 16 bytes; with the load factor between 3/8 and 3/4 it costs about 30
// bytes a key. States are updated in place; Sweep compacts a shard whose
// slab is mostly empty.
//
// All methods need mu held.
type shard struct {
	mu    sync.Mutex
	n     int    // keys held
	index []slot // len a power of two, or 0
	slab  []keyState
	free  []int32 // unused slab entries

	// The time of day of the second clockSec, cached: a sine and a cosine
	// per call showed in the benchmarks.
	clockSec           int64
	clockSin, clockCos float64

	_ [16]byte // a shard has its two cache lines to itself
}

// hourOfDay returns hourOfDay(t) at a one-second resolution.
func (sh *shard) hourOfDay(t int64) (sin, cos float64) {
	sec := t / 1e6
	if t < 0 && t%1e6 != 0 {
		sec--
	}
	if sec != sh.clockSec {
		sh.clockSec = sec
		sh.clockSin, sh.clockCos = hourOfDay(sec * 1e6)
	}
	return sh.clockSin, sh.clockCos
}

// slot is an index entry: a key hash (0 = empty; hash 0 is stored as 1)
// and the key's slab entry.
type slot struct {
	h uint64
	i int32
}

const minIndex = 8

func indexHash(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}

// home is the index position a hash is probed from. The low bits of the
// hash chose the shard, so the high bits choose the position.
func home(h uint64, mask int) int { return int(h>>32) & mask }

// find returns the index position of h, or -1.
func (sh *shard) find(h uint64) int {
	if len(sh.index) == 0 {
		return -1
	}
	mask := len(sh.index) - 1
	for p := home(h, mask); ; p = (p + 1) & mask {
		switch sh.index[p].h {
		case h:
			return p
		case 0:
			return -1
		}
	}
}

// lookup returns the state of the key hashed to h, or nil.
func (sh *shard) lookup(h uint64) *keyState {
	h = indexHash(h)
	if p := sh.find(h); p >= 0 {
		return &sh.slab[sh.index[p].i]
	}
	return nil
}

// upsert returns the state of the key hashed to h, made as first seen at t
// if new, or nil if the key is new and the shard holds limit keys (limit 0
// means no limit).
func (sh *shard) upsert(h uint64, t int64, limit int) *keyState {
	h = indexHash(h)
	if p := sh.find(h); p >= 0 {
		return &sh.slab[sh.index[p].i]
	}
	if limit > 0 && sh.n >= limit {
		return nil
	}
	if (sh.n+1)*4 > len(sh.index)*3 {
		sh.grow()
	}
	var i int32
	if k := len(sh.free); k > 0 {
		i = sh.free[k-1]
		sh.free = sh.free[:k-1]
		sh.slab[i] = newState(t)
	} else {
		i = int32(len(sh.slab))
		sh.slab = append(sh.slab, newState(t))
	}
	sh.insert(slot{h: h, i: i})
	sh.n++
	return &sh.slab[i]
}

// insert puts e at the first free position of its probe sequence.
func (sh *shard) insert(e slot) {
	mask := len(sh.index) - 1
	p := home(e.h, mask)
	for sh.index[p].h != 0 {
		p = (p + 1) & mask
	}
	sh.index[p] = e
}

// grow doubles the index.
func (sh *shard) grow() {
	old := sh.index
	sh.index = make([]slot, max(minIndex, 2*len(old)))
	for _, e := range old {
		if e.h != 0 {
			sh.insert(e)
		}
	}
}

// remove empties index position p and shifts later entries of the probe
// run back, so that no probe sequence is broken (Knuth's algorithm R).
func (sh *shard) remove(p int) {
	mask := len(sh.index) - 1
	for q := p; ; {
		sh.index[p] = slot{}
		for {
			q = (q + 1) & mask
			e := sh.index[q]
			if e.h == 0 {
				return
			}
			// e may move to p unless its home lies cyclically in (p, q].
			r := home(e.h, mask)
			if (p <= q && (r <= p || r > q)) || (p > q && r <= p && r > q) {
				sh.index[p] = e
				p = q
				break
			}
		}
	}
}

// sweep drops the keys last updated before cutoff and returns how many. A
// slab less than half used afterwards is compacted, so that the memory of
// a burst of keys is given back.
func (sh *shard) sweep(cutoff int64) int {
	dropped := 0
	for p := 0; p < len(sh.index); {
		e := sh.index[p]
		if e.h == 0 || sh.slab[e.i].at >= cutoff {
			p++
			continue
		}
		sh.slab[e.i] = keyState{}
		sh.free = append(sh.free, e.i)
		sh.remove(p) // may move a later entry to p: look at p again
		sh.n--
		dropped++
	}
	if sh.n < len(sh.slab)/2 {
		sh.compact()
	}
	return dropped
}

// compact moves the live states to a slab of their size and the index to
// the smallest size that holds them.
func (sh *shard) compact() {
	size := minIndex
	for sh.n*4 > size*3 {
		size *= 2
	}
	slab := make([]keyState, 0, sh.n)
	old := sh.index
	sh.index = make([]slot, size)
	if sh.n == 0 {
		sh.index = nil
	}
	for _, e := range old {
		if e.h != 0 {
			slab = append(slab, sh.slab[e.i])
			sh.insert(slot{h: e.h, i: int32(len(slab) - 1)})
		}
	}
	sh.slab, sh.free = slab, nil
}
