package state

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"optsync/extract"
	"optsync/transform"
)

// TestTransactionOfSeveralBatchesKeepsWhatBboltHolds: a walk's commit puts
// several batches in one transaction (txBatches), each handed back to the
// decider to be filled again once put, before the transaction commits.
// What bbolt keeps of a batch until then (its decision-log entries, its
// blocks of the PKey index written whole) must not change with it: the
// batch is scribbled over after each put, and the file must hold what was
// put.
func TestTransactionOfSeveralBatchesKeepsWhatBboltHolds(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.DropPKeyIndex(); err != nil {
		t.Fatal(err)
	}
	const batches, per = 3, 40
	var want []PKeyEntry
	for i := range batches * per {
		want = append(want, PKeyEntry{PKey: fmt.Sprintf("@key-%04d", i), ID: id(i)})
	}
	next := 0
	c := &committer{s: st, o: CommitOptions{PKeys: func() (string, extract.ID, bool, error) {
		if next == len(want) {
			return "", extract.ID{}, false, nil
		}
		next++
		return want[next-1].PKey, want[next-1].ID, true, nil
	}}}
	scribble := func(bufs ...[]byte) {
		for _, b := range bufs {
			b = b[:cap(b)]
			for i := range b {
				b[i] = 0xa5
			}
		}
	}
	var hold txHold
	b := st.NewBatch(per) // one batch filled again and again, as a committer's
	b.scratch = &commitScratch{}
	err = st.commitEach(ctx, func(put func(*Batch, *Final) error) error {
		for k := range batches {
			b.Reset()
			b.wholePK = true
			for i := k * per; i < (k+1)*per; i++ {
				s := snap(i)
				b.Put(id(i), &s)
				b.AddLog(LogEntry{RunStarted: logT0, Seq: uint32(i + 1), Contact: id(i), PKey: s.PKey, Pair: 0,
					D365Field: testPairs[0].D365, CampaignField: testPairs[0].Campaign, Outcome: "applied",
					Rule: transform.RuleOnlyD365Changed}, "r1", testPairs)
			}
			var fin *Final
			take := per
			if k == batches-1 {
				take = 2 * per // past the last key: the range runs to the end
				fin = &Final{Run: &Run{ID: "r1", Started: logT0, Outcome: "ok"}}
			}
			left, err := c.wholeKeys(b, take)
			if err != nil {
				return err
			}
			b.built = !left
			if err := put(b, fin); err != nil {
				return err
			}
			hold.take(b)
			scribble(b.data, b.log.vals, b.log.keys, b.log.idx, b.whole, b.keyArena)
		}
		return nil
	})
	hold.committed()
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range batches * per {
		var got transform.Snapshot
		if found, err := r.Get(id(i), &got); err != nil || !found {
			t.Fatalf("contact %d: found %v, %v", i, found, err)
		}
		if w := snap(i); got.PKey != w.PKey || got.Pairs[0] != w.Pairs[0] || got.DModified != w.DModified {
			t.Fatalf("contact %d: %+v, want %+v", i, got, w)
		}
	}
	var pkeys []PKeyEntry
	if err := r.EachPKey(func(pkey string, id extract.ID) bool {
		pkeys = append(pkeys, PKeyEntry{PKey: pkey, ID: id})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pkeys, want) {
		t.Fatalf("the PKey index holds %v, want %v", pkeys, want)
	}
	if ready, err := st.IndexesReady(); err != nil || !ready {
		t.Fatalf("the PKey index is not marked built (%v)", err)
	}
	var seqs []uint32
	if err := st.QueryLog(LogQuery{}, func(e *LogEntry) error {
		if e.Contact != id(int(e.Seq)-1) || e.PKey != snap(int(e.Seq)-1).PKey || e.RunID != "r1" {
			return fmt.Errorf("log entry %d: %+v", e.Seq, e)
		}
		seqs = append(seqs, e.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != batches*per {
		t.Fatalf("%d log entries, want %d", len(seqs), batches*per)
	}
}
