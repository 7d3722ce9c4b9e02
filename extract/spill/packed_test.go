package spill

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"
)

// recTie orders encoded recs as recCodec's Compare does.
func recTie() func(a, b []byte) int {
	return func(a, b []byte) int {
		var ra, rb rec
		if recCodec.Decode(a, &ra) != nil || recCodec.Decode(b, &rb) != nil {
			panic("a rec malformed")
		}
		return recCodec.Compare(&ra, &rb)
	}
}

// TestPackedSortsAsASorter: records added to a Packed come back as a
// Sorter's would (in order, equal ones in the order added, ties on the key
// left to the encoded comparison), whatever the budget: all in memory
// (decoded), halves written while the next fills, a last half written as
// two runs at once, a record alone past a half; and its runs leave no file
// in the folder.
func TestPackedSortsAsASorter(t *testing.T) {
	// what a rec takes of a half: its key, length and 8 bytes, of seven
	// tenths of the half (the chunks' unused ends left aside)
	const per = (keySize + 1 + 8) * 10 / 7
	for _, tc := range []struct {
		name          string
		n             int
		budget        int64
		handed        bool // halves were written while adding
		inMemory      bool
		minRunsOnDisk int
	}{
		{"no budget", 3000, 0, false, true, 0},
		{"within the budget", 3000, 1 << 20, false, true, 0},
		{"past half the budget once", 3000, 2 * per * 2000, true, false, 2},
		{"many halves", 3000, 2 * per * 32, true, false, 90},
		{"a last half in two runs", 3 * restParts, 2 * per * 2 * restParts, true, false, 3},
		{"a record past a half", 300, per, true, false, 300},
	} {
		in, want := randomRecs(5, 6, tc.n, 200)
		for _, shift := range []int{3, 40} { // keys that tell most records apart, or none
			codec := recCodec
			codec.Key = func(r *rec) uint64 { return uint64(r.key) >> shift }
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				p := PackedOf(NewSorter(codec, tc.budget, dir, 8), recTie)
				for i := range in {
					if err := p.Add(&in[i]); err != nil {
						t.Fatal(err)
					}
				}
				s, err := p.Finish(recCodec.Decode)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if (p.Handed > 0) != tc.handed || p.Written != p.Handed {
					t.Fatalf("%d halves handed, %d written", p.Handed, p.Written)
				}
				if left, _ := os.ReadDir(dir); len(left) > 0 {
					t.Fatalf("named files in the folder: %v", left)
				}
				if _, ok := s.InMemory(); ok != tc.inMemory {
					t.Fatalf("in memory: %v", ok)
				}
				if len(s.runs) < tc.minRunsOnDisk || s.Added != len(in) || s.Spilled != len(s.runs) {
					t.Fatalf("%d runs (%d spilled), %d added", len(s.runs), s.Spilled, s.Added)
				}
				got := sortedAll(t, s)
				if !slices.Equal(got, want) {
					t.Fatalf("out of order (%d records, %d runs)", len(got), s.Spilled)
				}
			})
		}
	}
}

// TestPackedClosedWhileWriting: a Packed closed with a half still being
// written waits for it and lets go of every run.
func TestPackedClosedWhileWriting(t *testing.T) {
	codec := recCodec
	codec.Key = func(r *rec) uint64 { return uint64(r.key) }
	p := PackedOf(NewSorter(codec, 25*64, t.TempDir(), 8), recTie)
	for i := range 1000 {
		r := rec{key: uint32(i * 7 % 13), seq: uint32(i)}
		if err := p.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	if p.Handed == 0 {
		t.Fatal("no half handed")
	}
	p.Close()
	if p.writing != nil || len(p.runs) != 0 || p.halves[0] != nil || p.halves[1] != nil {
		t.Fatal("a write, runs or halves left")
	}
}

// TestPackedTellsAFailedWrite: a half that cannot be written (its folder
// gone) is an error from the Add that hands the next half, or from
// Finish, never a run silently missing; so is a record held that cannot
// be decoded back.
func TestPackedTellsAFailedWrite(t *testing.T) {
	codec := recCodec
	codec.Key = func(r *rec) uint64 { return uint64(r.key) }
	for _, n := range []int{100, 1000, 3 * restParts} { // one half handed, several, a last half in two
		dir := filepath.Join(t.TempDir(), "gone")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		budget := int64(25 * 128)
		if n > restParts {
			budget = 2 * 25 * 2 * restParts
		}
		p := PackedOf(NewSorter(codec, budget, dir, 8), recTie)
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		var err error
		for i := 0; i < n && err == nil; i++ {
			r := rec{key: uint32(i % 17), seq: uint32(i)}
			err = p.Add(&r)
		}
		if err == nil {
			var s *Sorter[rec]
			if s, err = p.Finish(recCodec.Decode); err == nil {
				s.Close()
			}
		}
		if err == nil {
			t.Fatalf("%d records: no error", n)
		}
		p.Close()
	}
	p := PackedOf(NewSorter(codec, 0, t.TempDir(), 8), recTie)
	r := rec{key: 1}
	if err := p.Add(&r); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Finish(func([]byte, *rec) error { return os.ErrInvalid }); err == nil {
		t.Fatal("a record that cannot be decoded: no error")
	}
}

// TestPackedHoldsItsBudget: a half's arena and the records too long for
// its chunks hold no more than seven tenths of half the budget between
// them, the arena made once (never copied to grow), however the records
// fill it; the records come back whole.
func TestPackedHoldsItsBudget(t *testing.T) {
	codec := recCodec
	codec.Key = func(r *rec) uint64 { return uint64(r.key) << 48 } // many buckets
	for _, budget := range []int64{1 << 14, 1 << 18, 1 << 20} {
		p := PackedOf(NewSorter(codec, budget, t.TempDir(), 8), recTie)
		made := map[*packedHalf]*byte{}
		for i := range 20000 {
			r := rec{key: uint32(i * 7919 % 10007), seq: uint32(i)}
			if err := p.Add(&r); err != nil {
				t.Fatal(err)
			}
			// the filling half (the other may be being written)
			h := p.halves[p.cur]
			if h.used > int64(len(h.arena)) || int64(len(h.arena)) > budget/2*7/10 {
				t.Fatalf("budget %d: a half holds %d bytes in an arena of %d", budget, h.used, len(h.arena))
			}
			if m, ok := made[h]; ok && m != unsafe.SliceData(h.arena) {
				t.Fatalf("budget %d: a half's arena was made again", budget)
			}
			made[h] = unsafe.SliceData(h.arena)
		}
		s, err := p.Finish(recCodec.Decode)
		if err != nil {
			t.Fatal(err)
		}
		if got := sortedAll(t, s); len(got) != 20000 {
			t.Fatalf("budget %d: %d records back", budget, len(got))
		}
		s.Close()
	}
}

// padded is a record whose encoding is as long as pad says.
type padded struct {
	key, seq uint32
	pad      int
}

// TestPackedKeepsOrderPastLongRecords: records too long for a chunk (a
// chunk of their own) among short ones of the same key come back in the
// order added, whether held, written as runs, or a last half in two.
func TestPackedKeepsOrderPastLongRecords(t *testing.T) {
	codec := Codec[padded]{
		Compare: func(a, b *padded) int { return int(a.key) - int(b.key) },
		Append: func(dst []byte, p *padded) []byte {
			dst = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(dst, p.key), p.seq)
			return append(dst, make([]byte, p.pad)...)
		},
		Decode: func(b []byte, p *padded) error {
			p.key, p.seq, p.pad = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]), len(b)-8
			return nil
		},
		Key: func(p *padded) uint64 { return uint64(p.key) << 56 },
	}
	tie := func() func(a, b []byte) int {
		return func(a, b []byte) int { return int(binary.BigEndian.Uint32(a)) - int(binary.BigEndian.Uint32(b)) }
	}
	for _, budget := range []int64{0, 1 << 16, 1 << 22} {
		const n = 3 * restParts
		in := make([]padded, n)
		for i := range in {
			in[i] = padded{key: uint32(i % 3), seq: uint32(i)}
			if i%97 == 5 {
				in[i].pad = 2*minChunk + i%7 // past any chunk of these halves
			}
		}
		p := PackedOf(NewSorter(codec, budget, t.TempDir(), 16), tie)
		for i := range in {
			if err := p.Add(&in[i]); err != nil {
				t.Fatal(err)
			}
		}
		s, err := p.Finish(codec.Decode)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.Sorted()
		if err != nil {
			t.Fatal(err)
		}
		var last [3]int64
		last = [3]int64{-1, -1, -1}
		key, got := uint32(0), 0
		for r := st.Next(); r != nil; r = st.Next() {
			if r.key < key || int64(r.seq) <= last[r.key] || r.pad != in[r.seq].pad {
				t.Fatalf("budget %d: record %d (key %d) after %d of its key", budget, r.seq, r.key, last[r.key])
			}
			key, last[r.key] = r.key, int64(r.seq)
			got++
		}
		if err := st.Err(); err != nil || got != n {
			t.Fatalf("budget %d: %d records back, %v", budget, got, err)
		}
		st.Close()
	}
}
