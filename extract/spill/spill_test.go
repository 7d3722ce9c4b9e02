package spill

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

type rec struct{ key, seq uint32 }

var recCodec = Codec[rec]{
	Compare: func(a, b *rec) int { return int(a.key) - int(b.key) },
	Append: func(dst []byte, r *rec) []byte {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(dst, r.key), r.seq)
	},
	Decode: func(b []byte, r *rec) error {
		if len(b) != 8 {
			return errors.New("bad length")
		}
		r.key, r.seq = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
		return nil
	},
	Stable: true,
}

// TestSorterSpillsInOrder: whatever the budget, records come back in
// order, records with equal keys in the order added, and the runs on disk
// leave no file in the folder.
func TestSorterSpillsInOrder(t *testing.T) {
	in, want := randomRecs(1, 2, 5000, 300)
	keyed := recCodec
	keyed.Key = func(r *rec) uint64 { return uint64(r.key) >> 4 } // ties left to Compare
	// a key whose every byte varies: the radix sort makes every pass
	wide := recCodec
	wide.Key = func(r *rec) uint64 { return uint64(r.key)<<52 | uint64(r.key)<<30 | uint64(r.key)*0x1357 }
	// a key whose highest byte takes every value up to 0xff
	full := recCodec
	full.Key = func(r *rec) uint64 { return uint64(r.key)*0xff/299<<56 | uint64(r.key) }
	// a codec that reads ahead what its records point to: each record
	// written to a run is read ahead once
	touched := 0
	touching := keyed
	touching.Touch = func(r *rec) uint64 { touched++; return uint64(r.seq) }
	for _, tc := range []struct {
		name       string
		budget     int64
		wantSpills bool
	}{{"in memory", 0, false}, {"large budget", 1 << 30, false}, {"tiny budget", 8 * 64, true}, {"16 records a run", 8 * 16, true}} {
		for _, codec := range []Codec[rec]{recCodec, keyed, wide, full, touching} {
			touched = 0
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				s := NewSorter(codec, tc.budget, dir, 8)
				defer s.Close()
				for i := range in {
					if err := s.Add(&in[i]); err != nil {
						t.Fatal(err)
					}
				}
				if left, _ := os.ReadDir(dir); len(left) > 0 {
					t.Fatalf("named files in the folder: %v", left)
				}
				got := sortedAll(t, s)
				if !slices.Equal(got, want) {
					t.Fatalf("out of order (%d records, %d spilled runs)", len(got), s.Spilled)
				}
				if (s.Spilled > 0) != tc.wantSpills {
					t.Fatalf("spilled %d runs", s.Spilled)
				}
				if codec.Touch != nil && tc.wantSpills && touched != len(in) {
					t.Fatalf("%d records read ahead of %d spilled", touched, len(in))
				}
			})
		}
	}
}

// TestRemoveLeftovers removes the named spill files a kill may leave, and
// nothing else.
func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{leftoverPrefix + "123", leftoverPrefix + "abc", "audit-x.csv", "spill-not-ours"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveLeftovers(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if !slices.Equal(removed, []string{leftoverPrefix + "123", leftoverPrefix + "abc"}) {
		t.Fatalf("removed %v", removed)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 2 {
		t.Fatalf("left %v", left)
	}
}

// TestTempFileMode: a spill file is the process's alone.
func TestTempFileMode(t *testing.T) {
	f, err := TempFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

// TestMergeAnyNumberOfRuns: the merge gives the records in order, equal
// ones in the order added, from any number of runs (a tree of losers has
// leaves at two depths unless the runs are a power of two), with and
// without keys, keys that tie included.
func TestMergeAnyNumberOfRuns(t *testing.T) {
	in, want := randomRecs(9, 9, 150, 40)
	keyed := recCodec
	keyed.Key = func(r *rec) uint64 { return uint64(r.key) >> 3 }
	dir := t.TempDir()
	for perRun := 1; perRun <= len(in); perRun++ {
		for _, codec := range []Codec[rec]{recCodec, keyed} {
			s := NewSorter(codec, int64(8*perRun), dir, 8)
			for i := range in {
				if err := s.Add(&in[i]); err != nil {
					t.Fatal(err)
				}
			}
			st, err := s.Sorted()
			if err != nil {
				t.Fatal(err)
			}
			var got []rec
			for r := st.Next(); r != nil; r = st.Next() {
				got = append(got, *r)
			}
			if st.Next() != nil || st.Err() != nil {
				t.Fatalf("%d a run: a record after the end, or %v", perRun, st.Err())
			}
			st.Close()
			s.Close()
			if wantRuns := (len(in) + perRun - 1) / perRun; s.Spilled != wantRuns {
				t.Fatalf("%d a run: %d runs, want %d", perRun, s.Spilled, wantRuns)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%d a run (%d runs): out of order", perRun, s.Spilled)
			}
		}
	}
}

// TestReadOnceGivesPagesBack: a spill file read through ReadOnce reads
// whole, and the file system holds no more of it than the last few
// megabytes read (its blocks behind the read are given back).
func TestReadOnceGivesPagesBack(t *testing.T) {
	f, err := TempFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 5*freeEvery + 12345
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>13)
	}
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // blocks allocated, not only reserved
		t.Fatal(err)
	}
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	if b := blocks(); b < size {
		t.Skipf("the file system holds %d bytes of a %d-byte file", b, size)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	r := ReadOnce(f)
	got := make([]byte, 0, size)
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if read := int64(len(got)); read > 2*freeEvery && blocks() > size-read+freeEvery+256<<10 {
			if r.(*readOnce).cannot {
				t.Skip("the file system does not punch holes")
			}
			t.Fatalf("read %d of %d bytes, the file still holds %d", read, size, blocks())
		}
	}
	if !slices.Equal(got, want) {
		t.Fatal("what was read differs from what was written")
	}
}

// TestSorterGrowsToWhatTheBudgetHolds: the records a sorter holds grow to
// as many as its budget holds (what each points to counted), not to the
// next doubling beyond; announced (Reserve), they are made room for at
// once: with the first record when announced before it (never copied),
// else once a few are in.
func TestSorterGrowsToWhatTheBudgetHolds(t *testing.T) {
	const fits = 600_000 // records of 8 bytes, each pointing to 24 more
	sized := recCodec
	sized.Size = func(*rec) int { return 24 }
	for _, tc := range []struct {
		name      string
		reserveAt int // -1: never
		grew      int // -1: any
	}{
		{"unannounced", -1, -1},
		{"announced first", 0, 0},
		{"announced after one", 1, 1},
	} {
		s := NewSorter(sized, fits*32, t.TempDir(), 8)
		grew := 0
		for i := 0; s.Spilled == 0; i++ {
			if i == tc.reserveAt {
				s.Reserve(5 * fits)
			}
			c := cap(s.items)
			if err := s.Add(&rec{key: uint32(i)}); err != nil {
				t.Fatal(err)
			}
			if cap(s.items) != c && c > 0 {
				grew++
			}
		}
		if c := cap(s.items); c < fits || c > fits+fits/32 {
			t.Errorf("%s: room for %d records at the spill, the budget holds %d", tc.name, c, fits)
		}
		if tc.grew >= 0 && (grew != tc.grew || s.Grew != tc.grew) {
			t.Errorf("%s: room made anew %d times (Grew %d), want %d", tc.name, grew, s.Grew, tc.grew)
		}
		s.Close()
	}
}

// Runs large enough that their sort's entries are mapped outside the heap
// (runEnts) come back in order, equal records in the order added.
func TestSorterSpillsLargeRunsInOrder(t *testing.T) {
	n := 3 * mapEntsFrom / 16 // three runs of a mapping's worth of entries
	in, want := randomRecs(3, 4, n, 1<<20)
	codec := recCodec
	codec.Key = func(r *rec) uint64 { return uint64(r.key) >> 3 }
	s := NewSorter(codec, int64(8*(n/3+1)), t.TempDir(), 8)
	defer s.Close()
	for i := range in {
		if err := s.Add(&in[i]); err != nil {
			t.Fatal(err)
		}
	}
	got := sortedAll(t, s)
	if s.Spilled < 3 || !slices.Equal(got, want) {
		t.Fatalf("%d runs; in order: %v", s.Spilled, slices.Equal(got, want))
	}
}

// The sorted entries become their places, in the same memory, mapped or
// not.
func TestRunEntsPlaces(t *testing.T) {
	for _, n := range []int{0, 1, 5, mapEntsFrom / 16, mapEntsFrom/16 + 7} {
		r := newRunEnts(n)
		if mapped := r.mem != nil; mapped != (n*16 >= mapEntsFrom) {
			t.Fatalf("%d entries: mapped %v", n, mapped)
		}
		for k := range r.ents {
			r.ents[k] = ent{key: ^uint64(k), at: int64((k * 7919) % max(n, 1))}
		}
		places := r.places()
		for k, at := range places {
			if int(at) != (k*7919)%max(n, 1) {
				r.free()
				t.Fatalf("%d entries: place %d is %d", n, k, at)
			}
		}
		if len(places) != n {
			t.Fatalf("%d places of %d", len(places), n)
		}
		r.free()
	}
}

// sortedAll is every record s gives back, in the order its stream gives
// them; a stream error fails the test.
func sortedAll[T any](t *testing.T, s *Sorter[T]) []T {
	t.Helper()
	st, err := s.Sorted()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []T
	for r := st.Next(); r != nil; r = st.Next() {
		got = append(got, *r)
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// randomRecs is n records with keys below keys, each with its place in the
// order added, from a generator seeded with seed1, seed2; and want, what
// any stable sort of them gives back.
func randomRecs(seed1, seed2 uint64, n int, keys uint32) (in, want []rec) {
	rng := rand.New(rand.NewPCG(seed1, seed2))
	in = make([]rec, n)
	for i := range in {
		in[i] = rec{key: rng.Uint32N(keys), seq: uint32(i)}
	}
	want = slices.Clone(in)
	slices.SortStableFunc(want, func(a, b rec) int { return recCodec.Compare(&a, &b) })
	return in, want
}
