package transform

import (
	"cmp"
	"hash/maphash"
	"math/bits"
	"slices"

	"optsync/extract"
)

// heldByPKey applies the rule by PKey (PKeyStream) to profile rows all held
// in memory, in place, when nobody needs to hear of every PKey in order (no
// owners, no count in state's PKey index: a first backfill): the rows it
// keeps are items[:kept], in no particular order (the sort by contact that
// follows orders them whole: ProfileContactOrder tells every two rows
// apart, so the order it is handed them in does not show).
//
// The rule only does something to a row alone: it drops a row linked to
// no contact (counting it when its time is read), and marks a row that is
// bad or whose time cannot be read as keeping its contact out. Only the
// rows of a PKey that other rows share need the PKey's rows together, in
// ProfilePKeyOrder. Sorting every row by PKey to find those few (and
// reading each row's PKey again, in that order, a cache miss each) was
// most of a held backfill's identity rules: a hash of each PKey, read in
// the order the rows lie, finds the rows whose PKey another may share, and
// only those are sorted and run through PKeyStream, whose superseded rows
// come in PKey order as before.
//
// hash is a PKey's hash (maphashPKey); any function will do, a poor one
// only makes more rows go through PKeyStream.
func heldByPKey(items []extract.Profile, ks *extract.Keys, superseded func(Superseded), hash func(string) uint64) (kept, unlinked int) {
	shared := sharedPKeys(items, ks, hash)
	var out []extract.Profile // what PKeyStream keeps of the shared rows
	if len(shared) > 0 {
		slices.SortFunc(shared, func(a, b int) int {
			return cmp.Or(ProfilePKeyOrder(ks, &items[a], &items[b]), cmp.Compare(a, b)) // stable
		})
		rows := make([]extract.Profile, len(shared))
		for k, i := range shared {
			rows[k] = items[i]
		}
		i := 0
		s := NewPKeyStream(func() *extract.Profile {
			if i == len(rows) {
				return nil
			}
			i++
			return &rows[i-1]
		}, ks, nil, superseded, nil)
		out = rows[:0] // written at or behind what was read: a group is read whole first
		for p := s.Next(); p != nil; p = s.Next() {
			out = append(out, *p)
		}
		unlinked += s.Unlinked
	}
	// The rows alone, in place; the shared ones are left out here and
	// their outcome appended.
	skip := make([]uint64, (len(items)+63)/64)
	for _, i := range shared {
		skip[i/64] |= 1 << (i % 64)
	}
	w := 0
	for i := range items {
		if skip[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		p := &items[i]
		pass, noContact := passAlone(p)
		if noContact {
			unlinked++
		}
		if !pass {
			continue
		}
		if w != i {
			items[w] = *p
		}
		w++
	}
	w += copy(items[w:], out)
	clear(items[w:])
	return w, unlinked
}

// passAlone is the rule by PKey over p, a row whose PKey no other row has
// (what PKeyStream makes of a group of one): a row whose PKey could not be
// read only keeps its contact out; one linked to no contact is dropped,
// and counted (noContact) unless it is bad or its time cannot be read;
// any other bad one, or one whose time cannot be read, is marked bad, so
// that it keeps its contact out.
func passAlone(p *extract.Profile) (pass, noContact bool) {
	if p.PKey.Empty() {
		return true, false
	}
	keptOut := p.Bad || p.Modified == extract.NoTime
	if p.Unlinked {
		return false, !keptOut
	}
	if keptOut {
		p.Bad = true
	}
	return true, false
}

// sharedPKeys returns the places of the rows whose PKey's hash another
// row's shares (rows without a PKey left out), in increasing order.
//
// Each row's hash and place go in one word (the place in the low bits, the
// hash's own given up for it), split by the hash's top byte into parts a
// cache holds; each part's words go into a small table by hash, where a
// word finds another of its hash.
func sharedPKeys(items []extract.Profile, ks *extract.Keys, hash func(string) uint64) []int {
	placeBits := uint(bits.Len(uint(len(items))))
	placeMask := uint64(1)<<placeBits - 1
	const empty = ^uint64(0) // a place no row has (placeMask > every place)
	hs := make([]uint64, 0, len(items))
	var start [257]int
	for i := range items {
		if k := items[i].PKey; !k.Empty() {
			w := hash(ks.Get(k))&^placeMask | uint64(i)
			hs = append(hs, w)
			start[w>>56+1]++
		}
	}
	for d := 1; d <= 256; d++ {
		start[d] += start[d-1]
	}
	next := start
	parts := make([]uint64, len(hs))
	for _, w := range hs {
		parts[next[w>>56]] = w
		next[w>>56]++
	}
	hs = nil
	var shared []int
	var table []uint64
	for d := range 256 {
		part := parts[start[d]:start[d+1]]
		size := 1 << bits.Len(uint(2*len(part)))
		if cap(table) < size {
			table = make([]uint64, size)
		}
		table = table[:size]
		for k := range table {
			table[k] = empty
		}
		for _, w := range part {
			h := w &^ placeMask
			t := int(h>>placeBits) & (size - 1)
			for ; table[t] != empty; t = (t + 1) & (size - 1) {
				if table[t]&^placeMask == h {
					shared = append(shared, int(table[t]&placeMask), int(w&placeMask))
					break
				}
			}
			if table[t] == empty {
				table[t] = w
			}
		}
	}
	slices.Sort(shared)
	return slices.Compact(shared)
}

// maphashPKey hashes PKeys with a seed of its own.
func maphashPKey() func(string) uint64 {
	seed := maphash.MakeSeed()
	return func(s string) uint64 { return maphash.String(seed, s) }
}
