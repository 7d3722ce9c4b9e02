package spill

import (
	"bytes"
	"io"
	"os"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
)

// TestSharedSpillSameRun: a run large enough for two goroutines to share
// its sort and encoding is the run one goroutine writes, byte for byte,
// every record read ahead once, whatever the keys (random, ties left to
// Compare, one key for all, a highest byte that takes few values).
func TestSharedSpillSameRun(t *testing.T) {
	in, want := randomRecs(7, 8, 3*parallelFrom+123, 1<<20)
	var touched atomic.Int64
	for _, tc := range []struct {
		name string
		key  func(*rec) uint64
	}{
		{"random keys", func(r *rec) uint64 { return uint64(r.key) << 40 }},
		{"ties left to Compare", func(r *rec) uint64 { return uint64(r.key) >> 12 << 50 }},
		{"one key", func(*rec) uint64 { return 42 }},
		{"few top bytes", func(r *rec) uint64 { return uint64(r.key%3)<<56 | uint64(r.key) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codec := recCodec
			codec.Key = tc.key
			codec.Touch = func(r *rec) uint64 { touched.Add(1); return uint64(r.seq) }
			var runs [2][]byte
			for w := range 2 {
				s := NewSorter(codec, 0, t.TempDir(), 8)
				s.items = slices.Clone(in)
				ents := make([]ent, len(in))
				s.order(ents, w+1)
				places := make([]int32, len(ents))
				for k, e := range ents {
					places[k] = int32(e.at)
				}
				f, err := TempFile(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				touched.Store(0)
				n, err := s.writeRun(f, places, w+1)
				if err != nil {
					t.Fatal(err)
				}
				if touched.Load() != int64(len(in)) {
					t.Fatalf("ways %d: %d records read ahead of %d", w+1, touched.Load(), len(in))
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				runs[w], err = io.ReadAll(f)
				f.Close()
				if err != nil || int64(len(runs[w])) != n {
					t.Fatalf("ways %d: read back %d bytes of %d: %v", w+1, len(runs[w]), n, err)
				}
			}
			if !bytes.Equal(runs[0], runs[1]) {
				t.Fatal("the run written by two goroutines differs from one goroutine's")
			}
		})
	}
	// and a sorter whose runs are that large gives its records back in order
	s := NewSorter(recCodec, int64(len(in)/2*8), t.TempDir(), 8)
	s.codec.Key = func(r *rec) uint64 { return uint64(r.key) << 40 }
	defer s.Close()
	for i := range in {
		if err := s.Add(&in[i]); err != nil {
			t.Fatal(err)
		}
	}
	if s.Spilled < 2 {
		t.Fatalf("spilled %d runs", s.Spilled)
	}
	if got := sortedAll(t, s); !slices.Equal(got, want) {
		t.Fatal("out of order")
	}
}

// TestSharedSpillWriteFails: a run whose write fails returns the error,
// with no goroutine left encoding.
func TestSharedSpillWriteFails(t *testing.T) {
	in, _ := randomRecs(9, 10, 4*runChunk, 1000)
	s := NewSorter(recCodec, 0, t.TempDir(), 8)
	s.items = in
	places := make([]int32, len(in))
	for i := range places {
		places[i] = int32(i)
	}
	f, err := os.Open(os.DevNull) // read only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.writeRun(f, places, 2); err == nil {
		t.Fatal("a failed write went unreported")
	}
}

// TestHasPointers: the records a spill need not clear are those without a
// pointer anywhere in them.
func TestHasPointers(t *testing.T) {
	type flat struct {
		a [16]byte
		b int64
		c [3]struct{ x uint16 }
		d bool
	}
	type deep struct {
		a int
		b [2]struct{ s string }
	}
	for _, tc := range []struct {
		t    reflect.Type
		want bool
	}{
		{reflect.TypeFor[flat](), false},
		{reflect.TypeFor[rec](), false},
		{reflect.TypeFor[[0]*int](), false},
		{reflect.TypeFor[deep](), true},
		{reflect.TypeFor[[]byte](), true},
		{reflect.TypeFor[string](), true},
		{reflect.TypeFor[map[int]int](), true},
		{reflect.TypeFor[*int](), true},
		{reflect.TypeFor[any](), true},
	} {
		if got := hasPointers(tc.t); got != tc.want {
			t.Errorf("%v: hasPointers %v, want %v", tc.t, got, tc.want)
		}
	}
}
