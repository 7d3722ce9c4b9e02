package state

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

var phonePair = transform.Pair{D365: "donotphone", Campaign: "blackListPhone"}

// fullSnap has every field set, including the header flags, and a known S
// on the first three pairs (none on contact 0).
func fullSnap(n int) transform.Snapshot {
	s := transform.Snapshot{Known: true, DSeen: n%2 == 0, CSeen: n%3 != 0, DModified: int64(n)*1000 - 5000,
		CModified: int64(n) * 977, PKey: "@k" + string(rune('a'+n%26)), Decided: int64(n) * 13}
	tri := []extract.Tri{extract.True, extract.False}
	for i := 0; i < 3; i++ {
		s.Pairs[i] = transform.PairState{S: tri[(n+i)%2], DRaw: tri[n%2], CRaw: tri[(n+1)%2], DWritten: tri[i%2], CWritten: extract.Unknown,
			DWrittenAt: 1_790_000_000 + int64(n*7+i)}
		if i == 2 {
			s.Pairs[i].CWritten, s.Pairs[i].CWrittenAt = extract.True, 1_780_000_000+int64(n)
		}
		if n == 0 {
			s.Pairs[i].S = extract.Unknown
		}
	}
	return s
}

// seenFull is a walk's callback for the records absent from its input:
// each must hold fullSnap of its number (the id's last two bytes), which
// it appends to seen.
func seenFull(t *testing.T, seen *[]int) func(extract.ID, *transform.Snapshot) error {
	return func(k extract.ID, s *transform.Snapshot) error {
		n := int(k[14])<<8 | int(k[15])
		if *s != fullSnap(n) {
			t.Fatalf("absent %d: %+v", n, *s)
		}
		*seen = append(*seen, n)
		return nil
	}
}

func openWith(t *testing.T, path string, pairs []transform.Pair, ns ...int) *Store {
	t.Helper()
	st, err := Open(path, pairs)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) > 0 {
		b := st.NewBatch(len(ns))
		for _, n := range ns {
			s := fullSnap(n)
			b.Put(id(n), &s)
		}
		if err := st.Commit(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func all(t *testing.T, st *Store) map[int]transform.Snapshot {
	t.Helper()
	out := map[int]transform.Snapshot{}
	if err := st.Each(func(id extract.ID, s *transform.Snapshot) error {
		out[int(id[14])<<8|int(id[15])] = *s
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReset(t *testing.T) {
	pairs := []transform.Pair{testPairs[0], testPairs[1], phonePair}
	cases := []struct {
		name    string
		reset   []transform.Pair
		cleared [3]bool
		changed int
	}{
		{"all", nil, [3]bool{true, true, true}, 3},
		{"one", []transform.Pair{testPairs[1]}, [3]bool{false, true, false}, 3},
		{"two", []transform.Pair{phonePair, testPairs[0]}, [3]bool{true, false, true}, 3},
		{"unregistered", []transform.Pair{{D365: "donotfax", Campaign: "blackListFax"}}, [3]bool{}, 0},
		{"flipped-invert-is-another-pair", []transform.Pair{{D365: "xx_sms", Campaign: "blackListMobile"}}, [3]bool{}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := openWith(t, filepath.Join(t.TempDir(), "state.db"), pairs, 0, 1, 2, 500)
			defer st.Close()
			n, err := st.Reset(context.Background(), tc.reset)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.changed {
				t.Errorf("changed %d records, want %d", n, tc.changed)
			}
			got := all(t, st)
			for _, k := range []int{0, 1, 2, 500} {
				want := fullSnap(k)
				for i, c := range tc.cleared {
					if c {
						want.Pairs[i].S = extract.Unknown
					}
				}
				if got[k] != want {
					t.Errorf("contact %d\n got %+v\nwant %+v", k, got[k], want)
				}
			}
		})
	}
}

func TestDropUnmapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	three := []transform.Pair{testPairs[0], testPairs[1], phonePair}
	ns := []int{0, 1, 2, 3, 700}
	openWith(t, path, three, ns...).Close()

	kept := []transform.Pair{phonePair, testPairs[0]}
	st := openWith(t, path, kept)
	dropped, err := st.DropUnmapped(context.Background(), kept)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dropped, []transform.Pair{testPairs[1]}) {
		t.Errorf("dropped %+v, want %+v", dropped, testPairs[1])
	}
	reg, err := st.registry()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := reg[string(pairKey(testPairs[1]))]; ok || len(reg) != 2 {
		t.Errorf("registry after drop: %v", reg)
	}
	if d, err := st.DropUnmapped(context.Background(), kept); err != nil || d != nil {
		t.Errorf("second drop: %v %v", d, err)
	}
	if err := st.db.View(func(tx *bolt.Tx) error {
		return st.records(tx.Bucket(bucketContacts)).ForEach(func(k, v []byte) error {
			r, err := parseRecord(v)
			if err != nil || r.count != 2 {
				t.Errorf("contact %x still has %d pair entries (%v)", k, r.count, err)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for k, got := range all(t, st) {
		want := fullSnap(k)
		if got.Pairs[0] != want.Pairs[2] || got.Pairs[1] != want.Pairs[0] || got.Pairs[2] != (transform.PairState{}) {
			t.Errorf("contact %d after drop: %+v", k, got.Pairs)
		}
	}
	st.Close()

	// Mapped again: it starts from first sight, not from its old values.
	st = openWith(t, path, three)
	defer st.Close()
	got := all(t, st)
	if len(got) != len(ns) {
		t.Fatalf("%d contacts, want %d", len(got), len(ns))
	}
	for k, g := range got {
		want := fullSnap(k)
		want.Pairs[1] = transform.PairState{}
		if g != want {
			t.Errorf("contact %d re-added\n got %+v\nwant %+v", k, g, want)
		}
	}
}

func TestProcessedFilesAndLastConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openWith(t, path, testPairs)
	if cfg, err := st.LastConfig(); err != nil || cfg != nil {
		t.Fatalf("fresh LastConfig: %+v %v", cfg, err)
	}
	now := time.Date(2026, 11, 29, 2, 0, 1, 500, time.UTC)
	files := []ProcessedFile{
		{SHA256: "aa11", System: "d365", Path: "in/contacts.csv", Size: 1234, RunID: "r1", Processed: now},
		{SHA256: "bb22", System: "campaign", Path: "in/profiles 1.csv", Size: 0, RunID: "r1", Processed: now.Add(time.Second)},
	}
	cfg := &ConfigRecord{Direction: "bidirectional", Policy: "newest", Pairs: testPairs}
	if err := st.Commit(context.Background(), st.NewBatch(0), &Final{Files: files, Config: cfg}); err != nil {
		t.Fatal(err)
	}
	cfg2 := &ConfigRecord{Direction: "d365-to-campaign", Policy: "adobe", Pairs: testPairs[:1]}
	if err := st.Commit(context.Background(), st.NewBatch(0), &Final{Config: cfg2}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err := OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, f := range files {
		got, ok, err := st.Processed(f.SHA256)
		if err != nil || !ok || !got.Processed.Equal(f.Processed) {
			t.Fatalf("Processed(%s) = %+v %v %v", f.SHA256, got, ok, err)
		}
		got.Processed = f.Processed
		if got != f {
			t.Errorf("Processed(%s)\n got %+v\nwant %+v", f.SHA256, got, f)
		}
	}
	if got, ok, err := st.Processed("cc33"); ok || err != nil || got != (ProcessedFile{}) {
		t.Errorf("unknown file: %+v %v %v", got, ok, err)
	}
	if got, err := st.LastConfig(); err != nil || !reflect.DeepEqual(got, cfg2) {
		t.Errorf("LastConfig = %+v %v, want %+v", got, err, cfg2)
	}
}

func TestReaderGet(t *testing.T) {
	has := func(n int) bool { return (n%5 == 0 || n%11 == 3) && (n < 5000 || n >= 5100) && n < 12000 }
	var order []int
	for n := 0; n < 12050; n++ { // ascending with gaps, then past the end
		order = append(order, n)
	}
	order = append(order, 12100, 30000, 11995, 11990, 11995) // after the end, then back
	for n := 12000; n >= 0; n -= 7 {                         // backwards
		order = append(order, n)
	}
	for i := 0; i < 3000; i++ { // out of order
		order = append(order, (i*7919)%12100)
	}
	for name, fill := range map[string]bool{"few-thousand-keys": true, "empty": false} {
		t.Run(name, func(t *testing.T) {
			var ns []int // put in descending order: Commit sorts
			for n := 12000; fill && n >= 0; n-- {
				if has(n) {
					ns = append(ns, n)
				}
			}
			st := openWith(t, filepath.Join(t.TempDir(), "state.db"), []transform.Pair{testPairs[0], testPairs[1], phonePair}, ns...)
			defer st.Close()
			r, err := st.Reader()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			found := 0
			for i, n := range order {
				sentinel := transform.Snapshot{PKey: "untouched"}
				got := sentinel
				ok, err := r.Get(id(n), &got)
				if err != nil {
					t.Fatal(err)
				}
				want := fill && has(n)
				if ok != want || (ok && got != fullSnap(n)) || (!ok && got != sentinel) {
					t.Fatalf("step %d: Get(%d) = %v %+v, want %v", i, n, ok, got, want)
				}
				if ok && i < 12050 {
					found++
				}
			}
			if found != len(ns) || (fill && found < 3000) {
				t.Errorf("found %d of %d keys on the ascending walk", found, len(ns))
			}
		})
	}
}

// Until walks every stored contact once: those asked for are reported
// found, every other one (absent from a run's input) goes to absent, in
// key order.
func TestReaderUntil(t *testing.T) {
	has := func(n int) bool { return n%3 == 0 && n < 3000 }
	var ns []int
	for n := 0; n < 3000; n++ {
		if has(n) {
			ns = append(ns, n)
		}
	}
	st := openWith(t, filepath.Join(t.TempDir(), "state.db"), []transform.Pair{testPairs[0], testPairs[1], phonePair}, ns...)
	defer st.Close()
	for _, step := range []int{1, 2, 7, 1000, 5000} {
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		var seen []int
		absent := seenFull(t, &seen)
		for n := 0; n < 3100; n += step {
			var got transform.Snapshot
			ok, err := r.Until(ptr(id(n)), &got, absent)
			if err != nil {
				t.Fatal(err)
			}
			if ok != has(n) || (ok && got != fullSnap(n)) {
				t.Fatalf("step %d: Until(%d) = %v %+v", step, n, ok, got)
			}
			if ok {
				seen = append(seen, n)
			}
		}
		if _, err := r.Until(nil, new(transform.Snapshot), absent); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if !slices.Equal(seen, ns) {
			t.Fatalf("step %d: walked %d contacts, want each of %d once in order", step, len(seen), len(ns))
		}
	}
}

func ptr[T any](v T) *T { return &v }

// A state file written before pending writes carried the run that wrote
// them (record version 1) is read as it was, the run "not recorded", and
// rewritten in the current layout by the maintenance rewrites.
func TestReadsVersion1Records(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openWith(t, path, testPairs, 5) // a commit registers the pairs
	ids := st.pairIDs
	// version 1: header, PKey, then 3 bytes per pair: id, flags lo, flags hi.
	v1 := []byte{1, 3}
	for _, x := range []int64{5000, 6000, 77, 0} {
		v1 = binary.AppendVarint(v1, x)
	}
	v1 = binary.AppendUvarint(v1, 3)
	v1 = append(v1, "@pk"...)
	f0 := uint16(extract.True) | uint16(extract.True)<<2 | uint16(extract.False)<<4 | uint16(extract.True)<<8 // CWritten true
	f1 := uint16(extract.False) | uint16(extract.False)<<2 | uint16(extract.True)<<6                          // DWritten true
	v1 = append(v1, 2, ids[0], byte(f0), byte(f0>>8), ids[1], byte(f1), byte(f1>>8))
	k1 := id(1)
	if err := st.db.Update(func(tx *bolt.Tx) error {
		return st.records(tx.Bucket(bucketContacts)).apply([]blockOp{{k: k1[:], v: v1, put: true}})
	}); err != nil {
		t.Fatal(err)
	}
	want := transform.Snapshot{Known: true, DSeen: true, CSeen: true, DModified: 5000, CModified: 6000, Decided: 77, PKey: "@pk"}
	want.Pairs[0] = transform.PairState{S: extract.True, DRaw: extract.True, CRaw: extract.False, CWritten: extract.True}
	want.Pairs[1] = transform.PairState{S: extract.False, DRaw: extract.False, DWritten: extract.True}
	check := func(what string) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var got transform.Snapshot
		if ok, err := r.Get(id(1), &got); !ok || err != nil || got != want {
			t.Fatalf("%s: %v %v\n got %+v\nwant %+v", what, ok, err, got, want)
		}
	}
	check("version 1")
	if _, err := st.Reset(context.Background(), testPairs[:1]); err != nil {
		t.Fatal(err)
	}
	want.Pairs[0].S = extract.Unknown
	check("after a reset")
	if err := st.db.View(func(tx *bolt.Tx) error {
		if v := st.records(tx.Bucket(bucketContacts)).Get(k1[:]); v[0] != recordVersion {
			t.Errorf("rewritten as version %d", v[0])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
}

// A removed mapping keeps its entries in records a run writes before its
// commit is done (DropUnmapped drops them after): a run killed half-way
// through its commit, whose mapping is added back, has lost nothing.
func TestCommitKeepsUnmappedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	three := []transform.Pair{testPairs[0], testPairs[1], phonePair}
	openWith(t, path, three, 1, 2).Close()
	two := []transform.Pair{testPairs[0], phonePair}
	st, err := Open(path, two)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.Unmapped(two); err != nil || len(got) != 1 || got[0] != testPairs[1] {
		t.Fatalf("Unmapped = %v %v", got, err)
	}
	b := st.NewBatch(1)
	s := transform.Snapshot{Known: true, DSeen: true, PKey: "@new"}
	s.Pairs[0] = transform.PairState{S: extract.True, DRaw: extract.True}
	b.Put(id(1), &s)
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = openWith(t, path, three)
	got := all(t, st)
	if want := fullSnap(1).Pairs[1]; got[1].Pairs[1] != want || got[1].PKey != "@new" || got[1].Pairs[0].S != extract.True {
		t.Fatalf("contact 1 after a commit with the mapping removed: %+v, want its pair 1 kept as %+v", got[1], want)
	}
	// and with it when its agreement was reached (the first commit's run)
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	var snap transform.Snapshot
	if ok, err := r.Get(id(1), &snap); !ok || err != nil {
		t.Fatal(ok, err)
	}
	a := r.Agreed()
	r.Close()
	if a[1] != fullSnap(1).Decided {
		t.Fatalf("pair 1 agreed since %d, want %d", a[1], fullSnap(1).Decided)
	}
	st.Close()
}

// TestProcessedStamps: a processed file is found by the path and stamp it
// was seen with, by nothing else; a restamp gives a record the stamp a
// later run saw it with, and leaves what else it says; a restamp of a
// file state has no record of writes nothing.
func TestProcessedStamps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openWith(t, path, testPairs)
	now := time.Date(2026, 11, 29, 2, 0, 1, 0, time.UTC)
	files := []ProcessedFile{
		{SHA256: "aa11", System: "d365", Path: "drop/a 1.csv", Size: 4, RunID: "r1", Processed: now, Seen: seenAs("1.2.4.5.6", "drop/a 1.csv")},
		{SHA256: "bb22", System: "campaign", Path: "drop/b.csv", Size: 4, RunID: "r1", Processed: now}, // no stamp
	}
	if err := st.Commit(context.Background(), st.NewBatch(0), &Final{Files: files}); err != nil {
		t.Fatal(err)
	}
	find := func(path, stamp string) (string, bool) {
		t.Helper()
		sum, ok, err := st.ProcessedStamps()(path, stamp)
		if err != nil {
			t.Fatal(err)
		}
		return sum, ok
	}
	if sum, ok := find("drop/a 1.csv", "1.2.4.5.6"); !ok || sum != "aa11" {
		t.Errorf("a 1.csv by its stamp: %q %v", sum, ok)
	}
	for _, c := range [][2]string{{"drop/a 1.csv", "1.2.4.5.7"}, {"drop/a 2.csv", "1.2.4.5.6"}, {"drop/b.csv", ""}, {"drop/b.csv", "9"}} {
		if sum, ok := find(c[0], c[1]); ok {
			t.Errorf("%q with stamp %q found as %q", c[0], c[1], sum)
		}
	}
	restamp := Restamps([]extract.InputFile{
		{Path: "drop/b.csv", Sum: "bb22", Stamp: "7.8"},
		{Path: "drop/new.csv", Sum: "cc33", Stamp: "9.9"},       // no record: nothing written
		{Path: "drop/a 1.csv", Sum: "aa11"},                     // no stamp: not a restamp
		{Path: "drop/moved/a 1.csv", Sum: "aa11", Stamp: "3.3"}, // moved since
	})
	if len(restamp) != 3 {
		t.Fatalf("Restamps: %+v, want the three with stamps", restamp)
	}
	if err := st.Commit(context.Background(), st.NewBatch(0), &Final{Restamp: restamp}); err != nil {
		t.Fatal(err)
	}
	if sum, ok := find("drop/b.csv", "7.8"); !ok || sum != "bb22" {
		t.Errorf("b.csv after its restamp: %q %v", sum, ok)
	}
	if sum, ok := find("drop/moved/a 1.csv", "3.3"); !ok || sum != "aa11" {
		t.Errorf("a 1.csv moved, after its restamp: %q %v", sum, ok)
	}
	if _, ok := find("drop/new.csv", "9.9"); ok {
		t.Error("a file never processed is found by the stamp a restamp gave it")
	}
	if _, ok, err := st.Processed("cc33"); ok || err != nil {
		t.Errorf("a restamp made a record of a file never processed: %v %v", ok, err)
	}
	for i, want := range files {
		got, ok, err := st.Processed(want.SHA256)
		if err != nil || !ok {
			t.Fatalf("Processed(%s): %v %v", want.SHA256, ok, err)
		}
		want.Seen = restamp[[]int{2, 0}[i]].Seen
		got.Processed = want.Processed
		if got != want {
			t.Errorf("after the restamp\n got %+v\nwant %+v (only the stamp changes)", got, want)
		}
	}
}
