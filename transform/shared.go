package transform

import (
	"math/bits"
	"slices"
)

// SharedPKeys tells, of the profile rows of a read too large for memory,
// those whose PKey another row may share: the only rows the rule by PKey
// needs side by side. The reading hands it every row's PKey (Add) once its
// sort first spills (the rows held then, and each row after); the rule by
// PKey then takes the rows it marks (Shared) out of the sort by contact
// and settles them apart, in PKey order, as heldByPKey does with rows in
// memory, and passes every other row on in contact order as the rule
// passes a row alone. Without it, such a read sorted every profile on disk
// by PKey, ran the rule over them and sorted what it kept on disk again
// by contact: at 10 M profiles 2.2 s of a 19 s backfill, and the part of
// it that grew faster than the rows.
//
// It keeps a 32-bit hash of each PKey counted, in a list that Settle
// sorts to find those that occur twice or more: a PKey another row has is
// always marked, one that no other row has only when another PKey's hash
// is the same (at ten million PKeys, about one row in 400). A list that
// would pass the budget becomes a table of 2-bit counts by hash (none,
// one, more) within a quarter of it, where a PKey shares its count with
// more others (more rows marked: at 30 M PKeys in 32 MB, one in five).
// A marked row whose PKey no other row has only goes the longer way: the
// rule's outcome is the same.
type SharedPKeys struct {
	hash func(string) uint64
	// list holds the hashes counted, at most limit; once Settled, dups
	// holds those counted twice or more, sorted.
	list  []uint32
	limit int
	dups  []uint32
	some  []uint64 // a bit for each dup's top dupBits bits
	// counts, when the list would have passed limit: 2^bits counts of 2
	// bits, both bits of a hash in one word.
	counts []uint64
	bits   uint
}

// NewSharedPKeys makes a tally of at most budget bytes (at least 1 KiB).
func NewSharedPKeys(budget int64) *SharedPKeys {
	budget = max(budget, 1<<10)
	// 2^n counts of 2 bits within a quarter of the budget
	n := min(bits.Len64(uint64(budget)/4*4)-1, 32)
	return &SharedPKeys{hash: maphashPKey(), limit: int(budget / 4), bits: uint(n)}
}

// Counting says the list passed its limit: the hashes are counted in a
// table.
func (s *SharedPKeys) Counting() bool { return s.counts != nil }

// hash32 is the tally's hash of a PKey.
func (s *SharedPKeys) hash32(pkey string) uint32 { return uint32(s.hash(pkey) >> 32) }

// Add counts a row's PKey (none: nothing to count).
func (s *SharedPKeys) Add(pkey string) {
	if pkey == "" {
		return
	}
	h := s.hash32(pkey)
	if s.counts == nil {
		if len(s.list) < s.limit {
			if len(s.list) == cap(s.list) {
				// grown within the limit, never past it
				s.list = slices.Grow(s.list, min(max(cap(s.list), 1<<16), s.limit-len(s.list)))
			}
			s.list = append(s.list, h)
			return
		}
		s.toCounts()
	}
	s.count(h)
}

// toCounts moves the hashes listed into counts.
func (s *SharedPKeys) toCounts() {
	s.counts = make([]uint64, max(1<<s.bits/32, 1))
	for _, h := range s.list {
		s.count(h)
	}
	s.list = nil
}

func (s *SharedPKeys) count(h uint32) {
	b := h >> (32 - s.bits)
	w, at := b>>5, (b&31)*2
	if (s.counts[w]>>at)&3 < 2 {
		s.counts[w] += 1 << at
	}
}

// Settle ends counting: the hashes listed are sorted (by radix, a byte a
// pass, through a second list as long) and those that occur twice or more
// kept, with a bitmap of them by their top bits that most PKeys, shared
// with none, are answered by.
func (s *SharedPKeys) Settle() {
	if s.counts != nil || s.list == nil {
		return
	}
	radixSort(s.list)
	var dups []uint32
	for i := 1; i < len(s.list); i++ {
		if h := s.list[i]; h == s.list[i-1] && (len(dups) == 0 || dups[len(dups)-1] != h) {
			dups = append(dups, h)
		}
	}
	s.list, s.dups = nil, dups
	s.some = make([]uint64, 1<<dupBits/64)
	for _, h := range dups {
		b := h >> (32 - dupBits)
		s.some[b>>6] |= 1 << (b & 63)
	}
}

// dupBits is the bits of a hash the bitmap of the hashes listed twice
// goes by: 128 KiB.
const dupBits = 20

// radixSort sorts hs, a byte at a time from the lowest, through a second
// list as long.
func radixSort(hs []uint32) {
	tmp := make([]uint32, len(hs))
	src, dst := hs, tmp
	for shift := uint(0); shift < 32; shift += 8 {
		var at [257]int
		for _, h := range src {
			at[(h>>shift)&0xff+1]++
		}
		for d := 1; d <= 256; d++ {
			at[d] += at[d-1]
		}
		for _, h := range src {
			d := (h >> shift) & 0xff
			dst[at[d]] = h
			at[d]++
		}
		src, dst = dst, src
	}
	// four passes: the sorted list is back in hs
}

// Shared says whether another row counted may have pkey: true for every
// PKey added twice or more, and for a few others. Settle first.
func (s *SharedPKeys) Shared(pkey string) bool {
	if pkey == "" {
		return false
	}
	h := s.hash32(pkey)
	if s.counts != nil {
		b := h >> (32 - s.bits)
		return (s.counts[b>>5]>>((b&31)*2))&3 >= 2
	}
	if b := h >> (32 - dupBits); s.some == nil || s.some[b>>6]&(1<<(b&63)) == 0 {
		return false
	}
	_, found := slices.BinarySearch(s.dups, h)
	return found
}
