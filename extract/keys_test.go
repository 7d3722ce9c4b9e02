package extract

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// What a Keys is given comes back as given, whatever its length (empty,
// short, a block of its own), with field times between, across blocks
// and writers.
func TestKeysRoundTrip(t *testing.T) {
	ks := NewKeys()
	w, v := ks.Writer(), ks.Writer()
	type put struct {
		k     Key
		s     string
		times *[MaxFields]int64
	}
	var puts []put
	for i := range 3000 {
		s := fmt.Sprintf("@%d", i) + strings.Repeat("x", i%97)
		if i%500 == 7 {
			s += strings.Repeat("long", 1000+i) // past keyBlock/16
		}
		if i%13 == 0 {
			s = ""
		}
		wr := w
		if i%3 == 0 {
			wr = v
		}
		puts = append(puts, put{k: wr.Put(s), s: s})
		if i%5 == 0 {
			tm := NoFieldTimes()
			tm[i%MaxFields] = int64(i) * 1e9
			puts = append(puts, put{k: wr.PutTimes(&tm), times: &tm})
		}
	}
	for i, p := range puts {
		if p.times == nil {
			if got := ks.Get(p.k); got != p.s || ks.Len(p.k) != len(p.s) || (p.s == "") != p.k.Empty() {
				t.Fatalf("put %d: got %.40q (%d), want %.40q", i, got, ks.Len(p.k), p.s)
			}
			continue
		}
		var got [MaxFields]int64
		if !ks.Times(p.k, &got) || got != *p.times || ks.Time(p.k, 3) != p.times[3] {
			t.Fatalf("put %d: times %v, want %v", i, got, *p.times)
		}
	}
	if ks.Time(0, 2) != NoTime {
		t.Error("no field times is not NoTime")
	}
	// Copied into another writer, they come back the same.
	c := ks.Writer()
	for _, p := range puts {
		if p.times == nil {
			if got := ks.Get(c.Copy(ks, p.k)); got != p.s {
				t.Fatalf("copy: %.40q, want %.40q", got, p.s)
			}
		} else if k := c.CopyTimes(ks, p.k); ks.Time(k, 1) != p.times[1] {
			t.Fatal("copied times differ")
		}
	}
}

// A writer lets go of the blocks filled wholly before a mark, and of all
// of them on Reset: what they named is a mistake to ask for (a panic, not
// another row's bytes); what came after the mark is kept, and strings
// taken before stay as they were.
func TestKeysLetGo(t *testing.T) {
	ks := NewKeys()
	w := ks.Writer()
	var before []Key
	for i := range 2000 {
		before = append(before, w.Put(fmt.Sprintf("@before-%d-%s", i, strings.Repeat("b", 40))))
	}
	kept := ks.Get(before[0])
	m := w.Mark()
	after := w.Put("@after")
	long := w.Put(strings.Repeat("L", 5000))
	w.ReleaseBefore(m)
	if ks.Get(after) != "@after" || ks.Len(long) != 5000 || ks.Get(before[len(before)-1]) == "" {
		t.Fatal("what the block at the mark holds was let go of")
	}
	mustPanic(t, "a key of a block let go of", func() { ks.Get(before[0]) })
	if kept != "@before-0-"+strings.Repeat("b", 40) {
		t.Errorf("a string taken before changed: %q", kept)
	}
	w.Reset()
	mustPanic(t, "a key after Reset", func() { ks.Get(after) })
	mustPanic(t, "a long key after Reset", func() { ks.Get(long) })
	if k := w.Put("@again"); ks.Get(k) != "@again" {
		t.Error("a writer Reset does not write again")
	}
	var nilWriter *KeyWriter
	nilWriter.Reset() // a run that read nothing
}

// Writers on goroutines of their own add blocks while others read keys
// already made (sortHeld lays out two parts at once): go test -race.
func TestKeysWritersAtOnce(t *testing.T) {
	ks := NewKeys()
	src := ks.Writer()
	var keys []Key
	for i := range 5000 {
		keys = append(keys, src.Put(fmt.Sprintf("@k%d", i)))
	}
	var wg sync.WaitGroup
	out := make([][]Key, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := ks.Writer()
			for _, k := range keys[g*2500 : (g+1)*2500] {
				out[g] = append(out[g], w.Copy(ks, k))
			}
		}()
	}
	wg.Wait()
	for g := range 2 {
		for i, k := range out[g] {
			if want := fmt.Sprintf("@k%d", g*2500+i); ks.Get(k) != want {
				t.Fatalf("copy %d of part %d: %q, want %q", i, g, ks.Get(k), want)
			}
		}
	}
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

// A writer that recycles its blocks fills them again: the reading after
// a spill takes no memory anew for as many bytes as it let go of, the
// Keys it returned before name nothing, and what it puts after reads back
// as put.
func TestKeyWriterRecycles(t *testing.T) {
	ks := NewKeys()
	w := ks.Writer()
	pkeys := func(round int) []string {
		s := make([]string, 20000)
		for i := range s {
			s[i] = fmt.Sprintf("@r%dk%015d", round, i)
		}
		return s
	}
	put := func(pkeys []string) []Key {
		keys := make([]Key, 0, len(pkeys))
		for _, p := range pkeys {
			keys = append(keys, w.Put(p))
		}
		return keys
	}
	before := put(pkeys(0))
	w.Recycle()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a Key from before the recycling still names bytes")
			}
		}()
		ks.Get(before[len(before)/2])
	}()
	second := pkeys(1)
	after := put(second)
	// each round fills the blocks the round before let go of: no block
	// is taken anew (a few bytes are: the Keys' slice, the table's
	// bookkeeping)
	var m0, m1 runtime.MemStats
	for range 3 {
		w.Recycle()
		runtime.ReadMemStats(&m0)
		after = put(second)
		runtime.ReadMemStats(&m1)
		if n := m1.TotalAlloc - m0.TotalAlloc - uint64(8*cap(after)); n >= keyBlock {
			t.Fatalf("%d bytes taken anew for %d PKeys put into recycled blocks", n, len(second))
		}
	}
	for i, k := range after {
		if got := ks.Get(k); got != second[i] {
			t.Fatalf("PKey %d reads %q, want %q", i, got, second[i])
		}
	}
}

// TestKeysAddAllocatesOnlyBlocks: a block added costs no allocation of
// the table's own but when its directory grows (once every keyPart
// blocks).
func TestKeysAddAllocatesOnlyBlocks(t *testing.T) {
	ks := NewKeys()
	ks.add(make([]byte, 8)) // the first directory
	blk := make([]byte, 8)
	allocs := testing.AllocsPerRun(keyPart/2, func() { ks.add(blk) })
	if allocs != 0 {
		t.Fatalf("%v allocations a block added", allocs)
	}
	if got := ks.Get(makeKey(keyPart/2, 0, 8)); len(got) != 8 {
		t.Fatalf("block %d names %d bytes", keyPart/2, len(got))
	}
}
