package spill

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// blob is a record of any length, ordered by key.
type blob struct {
	key  uint32
	data string
}

var blobCodec = Codec[blob]{
	Compare: func(a, b *blob) int { return cmp.Compare(a.key, b.key) },
	Append: func(dst []byte, r *blob) []byte {
		return append(binary.BigEndian.AppendUint32(dst, r.key), r.data...)
	},
	Decode: func(b []byte, r *blob) error {
		if len(b) < 4 {
			return errors.New("short blob")
		}
		r.key, r.data = binary.BigEndian.Uint32(b), string(b[4:])
		return nil
	},
	Size: func(r *blob) int { return len(r.data) },
}

// TestMergeReadsRecordsOfAnyLength: records read back in place come whole
// however they lie against the reader's buffer: across its end, longer
// than it, empty.
func TestMergeReadsRecordsOfAnyLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var in []blob
	for i := range 400 {
		n := rng.IntN(3000)
		switch i % 97 {
		case 5:
			n = runBuffer + rng.IntN(runBuffer) // longer than the buffer
		case 6:
			n = 0
		}
		in = append(in, blob{key: rng.Uint32N(50), data: strings.Repeat(string(rune('a'+i%26)), n)})
	}
	want := slices.Clone(in)
	slices.SortStableFunc(want, func(a, b blob) int { return blobCodec.Compare(&a, &b) })
	for _, budget := range []int64{64 << 10, 256 << 10, 1 << 20} {
		s := NewSorter(blobCodec, budget, t.TempDir(), 24)
		for i := range in {
			if err := s.Add(&in[i]); err != nil {
				t.Fatal(err)
			}
		}
		got := sortedAll(t, s)
		if s.Spilled < 2 {
			t.Fatalf("budget %d: %d runs, want a merge", budget, s.Spilled)
		}
		if !slices.EqualFunc(got, want, func(a, b blob) bool { return a == b }) {
			t.Fatalf("budget %d (%d runs): %d records back, not those added in order", budget, s.Spilled, len(got))
		}
	}
}

// TestMergeTellsACutRun: a run that ends inside a record (its length, or
// its bytes) is an error, never a shorter run.
func TestMergeTellsACutRun(t *testing.T) {
	one := func(r blob) []byte {
		b := blobCodec.Append(nil, &r)
		return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
	}
	whole := append(one(blob{key: 1, data: "abc"}), one(blob{key: 2, data: strings.Repeat("x", 300)})...)
	for _, tc := range []struct {
		name string
		run  []byte
		ok   int // records read before the error
	}{
		{"in a record", whole[:len(whole)-1], 1},
		{"in a length", append(one(blob{key: 1}), 0x80), 1},
		{"a length too large", append(one(blob{key: 1}), binary.AppendUvarint(nil, 1<<40)...), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runReader[blob]{src: bytes.NewReader(tc.run), buf: make([]byte, 16), codec: blobCodec}
			n := 0
			for r.advance() {
				n++
			}
			if n != tc.ok || r.err == nil {
				t.Fatalf("%d records, then %v; want %d, then an error", n, r.err, tc.ok)
			}
		})
	}
	r := &runReader[blob]{src: bytes.NewReader(whole), buf: make([]byte, 16), codec: blobCodec}
	n := 0
	for r.advance() {
		n++
	}
	if n != 2 || r.err != nil {
		t.Fatalf("a whole run: %d records, then %v", n, r.err)
	}
	failing := &runReader[blob]{src: io.MultiReader(bytes.NewReader(whole[:5]), errReader{}), buf: make([]byte, 16), codec: blobCodec}
	if failing.advance() || !errors.Is(failing.err, errRead) {
		t.Fatalf("a failed read: %v", failing.err)
	}
}

var errRead = errors.New("disk gone")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errRead }

// TestSortedWritesTheRestInTwo: the records memory holds when adding ends
// go to disk as two runs, written at once, and come back in the order
// a single run's would (equal records in the order added).
func TestSortedWritesTheRestInTwo(t *testing.T) {
	in, want := randomRecs(7, 8, 100_000, 1000)
	keyed := recCodec
	keyed.Key = func(r *rec) uint64 { return uint64(r.key) >> 2 }
	for _, codec := range []Codec[rec]{recCodec, keyed} {
		s := NewSorter(codec, 8*60_000, t.TempDir(), 8)
		for i := range in {
			if err := s.Add(&in[i]); err != nil {
				t.Fatal(err)
			}
		}
		got := sortedAll(t, s)
		if s.Spilled != 3 {
			t.Fatalf("%d runs, want one while adding and the rest in two", s.Spilled)
		}
		if !slices.Equal(got, want) {
			t.Fatal("out of order")
		}
	}
}

// TestSortedTellsAFailedRest: when the records held at the end cannot be
// written, Sorted says so.
func TestSortedTellsAFailedRest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := NewSorter(recCodec, 8*60_000, dir, 8)
	defer s.Close()
	for i := range 100_000 {
		r := rec{key: uint32(i % 1000), seq: uint32(i)}
		if err := s.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Sorted(); err == nil {
		st.Close()
		t.Fatal("no error")
	}
}

// TestRunBuffersWithinTheBudget: the readers of a merge hold a quarter of
// the sort's budget at most, each between 16 KB and 256 KB.
func TestRunBuffersWithinTheBudget(t *testing.T) {
	for _, tc := range []struct {
		budget int64
		runs   int
		want   int
	}{
		{1 << 30, 8, 256 << 10},
		{139 << 20, 9, 256 << 10},
		{8 << 20, 16, 128 << 10},
		{2 << 20, 100, 16 << 10},
		{0, 5, 256 << 10},
	} {
		if got := runBufferOf(tc.budget, tc.runs); got != tc.want {
			t.Errorf("budget %d, %d runs: %d", tc.budget, tc.runs, got)
		}
	}
}
