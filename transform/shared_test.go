package transform

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// radixSort sorts as slices.Sort does, whatever the values: spread, few,
// all alike, sorted already, backwards.
func TestRadixSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for name, gen := range map[string]func(i int) uint32{
		"spread":    func(int) uint32 { return rng.Uint32() },
		"few":       func(int) uint32 { return uint32(rng.IntN(3)) << 24 },
		"alike":     func(int) uint32 { return 0xdeadbeef },
		"sorted":    func(i int) uint32 { return uint32(i) * 977 },
		"backwards": func(i int) uint32 { return ^uint32(i) },
	} {
		for _, n := range []int{0, 1, 2, 1000, 70000} {
			hs := make([]uint32, n)
			for i := range hs {
				hs[i] = gen(i)
			}
			want := slices.Sorted(slices.Values(hs))
			if radixSort(hs); !slices.Equal(hs, want) {
				t.Fatalf("%s, %d: not sorted", name, n)
			}
		}
	}
}

// A tally that counted no PKey marks none.
func TestSharedPKeysOfNone(t *testing.T) {
	s := NewSharedPKeys(1 << 20)
	s.Add("")
	s.Settle()
	if s.Shared("@a") || s.Shared("") {
		t.Fatal("a PKey marked")
	}
}

// Every PKey counted twice or more is marked, in a list or in a table of
// counts; of the PKeys counted once, few are (the list's 32-bit hashes
// collide about once in 400 at ten million; here almost never), and a
// PKey none counted is not, until it collides.
func TestSharedPKeysMarksEveryPKeyCountedTwice(t *testing.T) {
	for _, tc := range []struct {
		budget   int64
		counting bool
		maxFalse int // of the PKeys counted once, marked (of 20,000)
	}{{1 << 20, false, 2}, {8 << 10, true, 20000}, {64 << 10, true, 8000}} {
		s := NewSharedPKeys(tc.budget)
		for i := range 20000 {
			s.Add(fmt.Sprintf("@once-%d", i))
			if i%10 == 0 {
				s.Add(fmt.Sprintf("@twice-%d", i))
				s.Add(fmt.Sprintf("@twice-%d", i))
			}
		}
		s.Add("")
		s.Settle()
		if s.Counting() != tc.counting {
			t.Fatalf("budget %d: counting %v", tc.budget, s.Counting())
		}
		for i := 0; i < 20000; i += 10 {
			if !s.Shared(fmt.Sprintf("@twice-%d", i)) {
				t.Fatalf("budget %d: @twice-%d not marked", tc.budget, i)
			}
		}
		marked := 0
		for i := range 20000 {
			if s.Shared(fmt.Sprintf("@once-%d", i)) {
				marked++
			}
		}
		if marked > tc.maxFalse {
			t.Errorf("budget %d: %d of the PKeys counted once marked", tc.budget, marked)
		}
		if s.Shared("") {
			t.Errorf("budget %d: no PKey marked", tc.budget)
		}
		t.Logf("budget %d: %d of 20,000 PKeys counted once marked", tc.budget, marked)
	}
}
