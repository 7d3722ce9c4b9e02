package state

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"

	"optsync/extract"
	"optsync/transform"
)

// aheadDirty keeps n dense entries of a backfill (placed in the rows held)
// within budget (0: in memory).
func aheadDirty(t *testing.T, n int, budget int64) *Dirty {
	t.Helper()
	cItems := make([]extract.Contact, n)
	pItems := make([]extract.Profile, n)
	ks := extract.NewKeys()
	kw := ks.Writer()
	for i := range n {
		cItems[i] = extract.Contact{ID: id(i), Modified: int64(1000 + i), Line: int32(i + 2)}
		pItems[i] = extract.Profile{ID: id(i), PKey: kw.Put("@p" + id(i).String()[:8]), Modified: int64(2000 + i), Line: int32(i + 2)}
	}
	d := NewDirty(budget, t.TempDir(), cItems, pItems, ks, n)
	for i := range n {
		e := transform.Entry{Kind: transform.EntryPair, ID: id(i), HasC: true, HasP: true, C: cItems[i],
			P: transform.ProfileSideOf(ks, &pItems[i]), CI: int32(i), PI: int32(i)}
		if i%7 == 3 { // kept whole, not placed
			e.CI, e.PI = -1, -1
		}
		if err := d.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// The entries read ahead are reader's, in its order and over many batches,
// and the end comes after the last, in memory and through the spill file.
func TestDirtyReadAheadGivesReadersEntries(t *testing.T) {
	const n = 5*dirtyAheadLen + 17
	for _, budget := range []int64{0, 4096} {
		want := readDirtyAll(t, aheadDirty(t, n, budget), false)
		got := readDirtyAll(t, aheadDirty(t, n, budget), true)
		if len(got) != n || len(want) != n {
			t.Fatalf("budget %d: %d entries read ahead, %d read, want %d", budget, len(got), len(want), n)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("budget %d: the entries read ahead differ from reader's", budget)
		}
	}
}

func readDirtyAll(t *testing.T, d *Dirty, ahead bool) []transform.Entry {
	t.Helper()
	defer d.Close()
	next, err := d.reader()
	stop := func() {}
	if ahead {
		next, stop, err = d.readerAhead()
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var all []transform.Entry
	for {
		var e transform.Entry
		more, err := next(&e)
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		all = append(all, e)
	}
	if more, err := next(new(transform.Entry)); more || err != nil {
		t.Fatalf("past the end: more %v, err %v", more, err)
	}
	return all
}

// A malformed entry stops the reading ahead where reader stops: the entries
// before it come first, then its error, and stopping returns.
func TestDirtyReadAheadStopsAtAMalformedEntry(t *testing.T) {
	const n, bad = 3 * dirtyAheadLen, 2*dirtyAheadLen + 5
	d := aheadDirty(t, n, 0)
	defer d.Close()
	// Entry bad's length runs past the end of what is kept.
	at := 0
	for range bad {
		at += 2 + int(binary.LittleEndian.Uint16(d.buf[at:]))
	}
	d.buf[at], d.buf[at+1] = 0xff, 0xff
	next, stop, err := d.readerAhead()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for i := range bad {
		var e transform.Entry
		if more, err := next(&e); !more || err != nil || e.ID != id(i) {
			t.Fatalf("entry %d: more %v, err %v, id %s", i, more, err, e.ID)
		}
	}
	if more, err := next(new(transform.Entry)); more || err == nil {
		t.Fatalf("the malformed entry: more %v, err %v", more, err)
	}
}

// A commit that stops early (an error, a cancel) stops the reading ahead:
// stop returns while entries are left, and again after.
func TestDirtyReadAheadStopsEarly(t *testing.T) {
	d := aheadDirty(t, 10*dirtyAheadLen, 0)
	defer d.Close()
	next, stop, err := d.readerAhead()
	if err != nil {
		t.Fatal(err)
	}
	if more, err := next(new(transform.Entry)); !more || err != nil {
		t.Fatalf("first entry: more %v, err %v", more, err)
	}
	stop()
	stop()
}

// Entries read back whole keep their PKeys and field times while later
// ones are read: the memory they are decoded into is never written again
// (more entries than a block of the arena holds of either).
func TestDirtyEntriesReadBackKeepTheirKeys(t *testing.T) {
	const n = 3000 // 3000 PKeys of 24 bytes, 3000 field times: past a block of each
	d := NewDirty(1, t.TempDir(), nil, nil, nil, n)
	defer d.Close()
	var added []transform.Entry
	for i := range n {
		times := new([extract.MaxFields]int64)
		for f := range times {
			times[f] = int64(i*10 + f)
		}
		e := transform.Entry{Kind: transform.EntryPair, ID: id(i), HasP: true, CI: -1, PI: -1,
			P: transform.ProfileSide{Profile: extract.Profile{ID: id(i), Modified: int64(i)}, PKey: fmt.Sprintf("@pkey-%018d", i), FieldModified: times}}
		if err := d.Add(&e); err != nil {
			t.Fatal(err)
		}
		e.CI, e.PI = 0, 0 // read back whole: no places
		added = append(added, e)
	}
	got := readDirtyAll(t, d, true)
	if !reflect.DeepEqual(got, added) {
		t.Fatal("entries read back whole changed as later ones were read")
	}
}
