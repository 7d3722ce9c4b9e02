package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

func checkTotals(t *testing.T, st *Store, step string) Totals {
	t.Helper()
	kept, err := st.Totals()
	if err != nil {
		t.Fatal(err)
	}
	want, err := st.Recount()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kept, want) {
		t.Fatalf("%s: kept totals %+v, a full recount gives %+v", step, kept, want)
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	return kept
}

// TestTotalsFollowEveryWrite changes records every way state changes them —
// commits of new and changed records, deletions, resets, a removed mapping —
// and checks after each that the kept totals equal a full recount.
func TestTotalsFollowEveryWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	three := []transform.Pair{testPairs[0], testPairs[1], phonePair}
	st, err := Open(path, three)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tri := func() extract.Tri { return extract.Tri(rng.IntN(3)) }
	ctx := context.Background()
	for step := 0; step < 40; step++ {
		b := st.NewBatch(0)
		// Half the steps put over records read (as a run's commit does:
		// each contact once), half blindly.
		read := step%2 == 0
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for range 1 + rng.IntN(60) {
			n := rng.IntN(300)
			if read && seen[n] {
				continue
			}
			seen[n] = true
			s := transform.Snapshot{Known: true, DSeen: rng.IntN(4) > 0, CSeen: rng.IntN(4) > 0, PKey: "@p", Decided: int64(step)}
			for i := range three {
				s.Pairs[i] = transform.PairState{S: tri(), DRaw: tri(), CRaw: tri(), DWritten: tri(), CWritten: tri()}
			}
			if read {
				var old transform.Snapshot
				if _, err := r.Get(id(n), &old); err != nil {
					t.Fatal(err)
				}
				b.PutRead(r, id(n), &s)
			} else {
				b.Put(id(n), &s)
			}
		}
		r.Close()
		fin := &Final{}
		for range rng.IntN(4) {
			fin.Forget = append(fin.Forget, id(rng.IntN(320))) // some never stored
		}
		if err := st.Commit(ctx, b, fin); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, st, "commit")
		if step%9 == 4 {
			if _, err := st.Reset(ctx, three[rng.IntN(3):][:1]); err != nil {
				t.Fatal(err)
			}
			checkTotals(t, st, "reset")
		}
	}
	tot := checkTotals(t, st, "before the drop")
	if tot.D365 == 0 || tot.Campaign == 0 || tot.OptOutSum() == 0 {
		t.Fatalf("the sequence left nothing to count: %+v", tot)
	}
	st.Close()
	// A removed mapping: a run's commit keeps its pair entries (they go
	// only once the run has committed, with DropUnmapped), and their
	// opt-outs stay counted, whether the commit put over records read or
	// blindly.
	st, err = Open(path, three[:2])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, read := range []bool{true, false} {
		b := st.NewBatch(0)
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		for n := range 300 {
			var old transform.Snapshot
			found, err := r.Get(id(n), &old)
			if err != nil {
				t.Fatal(err)
			}
			if !found || n%3 != 0 {
				continue
			}
			old.Pairs[0].S, old.Pairs[1].S = tri(), tri()
			if read {
				b.PutRead(r, id(n), &old)
			} else {
				b.Put(id(n), &old)
			}
		}
		r.Close()
		if err := st.Commit(ctx, b, nil); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, st, fmt.Sprintf("commit with a mapping removed (read %v)", read))
	}
	if _, err := st.DropUnmapped(ctx, three[:2]); err != nil {
		t.Fatal(err)
	}
	checkTotals(t, st, "drop")
	if err := st.db.View(func(tx *bolt.Tx) error {
		c, _, err := st.loadCounts(tx)
		for id, n := range c.optOuts {
			if n < 0 || (n != 0 && id != int(st.pairIDs[0]) && id != int(st.pairIDs[1])) {
				t.Errorf("pair id %d keeps %d opt-outs", id, n)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTotalsOfAnOlderFile: a state file from before the totals were kept
// gets them from one full count when a run first opens it; a reader counts
// them without writing.
func TestTotalsOfAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(0)
	for n := range 50 {
		s := fullSnap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	want := checkTotals(t, st, "new file")
	// Version 1 records do not keep when a pending write was made: the
	// older file's pending writes all count as written at a time not
	// recorded (0).
	all0 := make([][2]int, len(testPairs))
	for _, g := range want.Pending {
		for i := range g {
			all0[i][0] += g[i][0]
			all0[i][1] += g[i][1]
		}
	}
	want.Pending = map[int64][][2]int{0: all0}
	// Make it look as schema 1 wrote it: version 1 records, no totals (and
	// no seals).
	unsealAll(t, st, "1")
	if err := st.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, k := range [][]byte{keyCounts, keyPKeysOK, keyPendingOK} {
			if err := meta.Delete(k); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketPKeys, bucketPending} {
			if tx.Bucket(b) != nil {
				if err := tx.DeleteBucket(b); err != nil {
					return err
				}
			}
		}
		bk := tx.Bucket(bucketContacts)
		type kv struct{ k, v []byte }
		var old []kv
		err := bk.ForEach(func(k, v []byte) error {
			r, err := parseRecord(v)
			if err != nil {
				return err
			}
			nv, err := asVersion1(r)
			old = append(old, kv{append([]byte{}, k...), nv})
			return err
		})
		for _, e := range old {
			if err := bk.Put(e.k, e.v); err != nil {
				return err
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	ro, err := OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ro.Totals(); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("a reader's totals of an older file: %+v %v, want %+v", got, err, want)
	}
	ro.Close()
	st, err = Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := checkTotals(t, st, "older file opened"); !reflect.DeepEqual(got, want) {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
	// Its indexes are built once, from every record, by the first run
	// (here with a budget that makes the build sort in runs on disk).
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("an older file's indexes are ready: %v %v", ready, err)
	}
	if n, err := st.BuildIndexes(context.Background(), 64, t.TempDir()); err != nil || n != 50 {
		t.Fatalf("building the indexes read %d records: %v", n, err)
	}
	if ready, err := st.IndexesReady(); err != nil || !ready {
		t.Fatalf("the indexes are not ready after the build: %v %v", ready, err)
	}
	checkTotals(t, st, "indexes built")
	ir, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	// fullSnap gives PKey @k<letter n%26> to contacts whose n%3 != 0
	if got, err := ir.PKeyContacts("@kc"); err != nil || !slices.Equal(got, []extract.ID{id(2), id(28)}) {
		t.Errorf("contacts of @kc: %v %v", got, err)
	}
	var pend []extract.ID
	if err := ir.PendingContacts(0, func(c extract.ID) bool { pend = append(pend, c); return len(pend) < 3 }); err != nil || !slices.Equal(pend, []extract.ID{id(0), id(1), id(2)}) {
		t.Errorf("first contacts with writes not seen: %v %v", pend, err)
	}
	ir.Close()
	// Its records read as before, except that when each agreement was
	// reached, and when each pending write was written, is not known.
	for k, got := range all(t, st) {
		w := fullSnap(k)
		w.Pairs[2] = transform.PairState{} // not configured here
		for i := range w.Pairs {
			w.Pairs[i].DWrittenAt, w.Pairs[i].CWrittenAt = 0, 0
		}
		if got != w {
			t.Errorf("contact %d: %+v, want %+v", k, got, w)
		}
	}
	// Opening it sealed it (schema 5: a run's first write, its history
	// entry, is sealed) and stored nothing else (a run that writes no
	// records changes nothing); the first commit stores the totals, from
	// one full count.
	meta := func() (schema string, counted bool) {
		t.Helper()
		n, _ := schemaOf(t, st)
		if err := st.db.View(func(tx *bolt.Tx) error {
			counted = tx.Bucket(bucketMeta).Get(keyCounts) != nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(n), counted
	}
	if schema, counted := meta(); schema != fmt.Sprint(SchemaVersion) || counted {
		t.Fatalf("opening the older file stored schema %q, totals %v", schema, counted)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	var old transform.Snapshot
	if ok, err := r.Get(id(7), &old); !ok || err != nil {
		t.Fatal(ok, err)
	}
	changed := old
	changed.Pairs[0].S, changed.CSeen = extract.Unknown, false
	b = st.NewBatch(1)
	b.PutRead(r, id(7), &changed)
	r.Close()
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	checkTotals(t, st, "first commit")
	if schema, counted := meta(); schema != fmt.Sprint(SchemaVersion) || !counted {
		t.Fatalf("after the first commit: schema %q, totals %v", schema, counted)
	}
}

// asVersion1 writes a record as the released build did: a row version
// where the ETag is now, no write or agreement times.
func asVersion1(r record) ([]byte, error) {
	v := []byte{1, r.flags}
	v = binary.AppendVarint(v, r.dModified)
	v = binary.AppendVarint(v, r.cModified)
	v = binary.AppendVarint(v, r.decide)
	v = binary.AppendVarint(v, 4801245)
	v = binary.AppendUvarint(v, uint64(len(r.pkey)))
	v = append(v, r.pkey...)
	v = append(v, byte(r.count))
	_, err := r.walk(func(e pairEntry) { v = append(v, e.id, byte(e.flags), byte(e.flags>>8)) })
	return v, err
}

// trailer is a record's agreement times, as stored.
func trailer(t *testing.T, r record) []byte {
	t.Helper()
	rest, err := r.walk(func(pairEntry) {})
	if err != nil {
		t.Fatal(err)
	}
	return rest
}

// TestAgreementTimes: when each pair's agreement was reached is the run
// that reached it; a later run that keeps the agreement keeps that time
// (a few bytes in the record), one that changes it dates it anew; a reset
// and a removed mapping take their pairs' times away.
func TestAgreementTimes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	three := []transform.Pair{testPairs[0], testPairs[1], phonePair}
	st, err := Open(path, three)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2026, 10, 30, 2, 30, 0, 0, time.UTC).Unix()
	t2 := t1 + 86400*30
	s := transform.Snapshot{Known: true, DSeen: true, CSeen: true, PKey: "@p", Decided: t1}
	s.Pairs[0] = transform.PairState{S: extract.True}
	s.Pairs[1] = transform.PairState{S: extract.False}
	s.Pairs[2] = transform.PairState{S: extract.True}
	agreed := func() (Agreed, record) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var got transform.Snapshot
		if ok, err := r.Get(id(1), &got); !ok || err != nil {
			t.Fatalf("found=%v err=%v", ok, err)
		}
		if got != s {
			t.Fatalf("snapshot\n got %+v\nwant %+v", got, s)
		}
		return r.Agreed(), r.rec
	}
	commit := func(read bool) {
		t.Helper()
		b := st.NewBatch(1)
		if read {
			r, err := st.Reader()
			if err != nil {
				t.Fatal(err)
			}
			var old transform.Snapshot
			if _, err := r.Get(id(1), &old); err != nil {
				t.Fatal(err)
			}
			b.PutRead(r, id(1), &s)
			defer r.Close()
		} else {
			b.Put(id(1), &s)
		}
		if err := st.Commit(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	commit(false)
	if a, rec := agreed(); a != (Agreed{t1, t1, t1}) || len(trailer(t, rec)) != 0 {
		t.Fatalf("first: %v, trailer %v", a, trailer(t, rec))
	}
	// A month later the second pair's agreement changes; the others hold.
	s.Decided, s.Pairs[1].S = t2, extract.True
	commit(true)
	a, rec := agreed()
	if a != (Agreed{t1, t2, t1}) {
		t.Fatalf("after the second run: %v", a)
	}
	wantTrailer := binary.AppendVarint([]byte{rec.body[0]}, t2-t1)
	wantTrailer = binary.AppendVarint(append(wantTrailer, rec.body[6]), t2-t1)
	if got := trailer(t, rec); !reflect.DeepEqual(got, wantTrailer) {
		t.Errorf("trailer %v, want %v", got, wantTrailer)
	}
	// A reset of the third pair takes its agreement, and its time.
	if _, err := st.Reset(context.Background(), three[2:]); err != nil {
		t.Fatal(err)
	}
	s.Pairs[2].S = extract.Unknown
	if a, _ := agreed(); a != (Agreed{t1, t2, 0}) {
		t.Fatalf("after a reset: %v", a)
	}
	st.Close()
	// The first mapping removed: its time goes with it.
	st, err = Open(path, three[1:2])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.DropUnmapped(context.Background(), three[1:2]); err != nil {
		t.Fatal(err)
	}
	s.Pairs[0], s.Pairs[1], s.Pairs[2] = s.Pairs[1], transform.PairState{}, transform.PairState{}
	if a, rec := agreed(); a != (Agreed{t2}) || len(trailer(t, rec)) != 0 {
		t.Fatalf("after the drop: %v, trailer %v", a, trailer(t, rec))
	}
}
