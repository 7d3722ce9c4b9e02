package state

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"optsync/extract"
	"optsync/transform"
)

// orderSnap is contact n's snapshot as put by version v (0: the one on
// file before the batch): each version another PKey and other pending
// writes, so that a record replaced moves its keys in both indexes.
func orderSnap(n, v int) transform.Snapshot {
	s := transform.Snapshot{Known: true, DSeen: true, CSeen: n%5 != 0, DModified: int64(n)*1000 + int64(v),
		CModified: int64(n)*977 + int64(v), PKey: fmt.Sprintf("@k%d.%d", n%7, v), Decided: 1_790_000_000 + int64(v)}
	s.Pairs[0] = transform.PairState{S: extract.True, DRaw: extract.True, CRaw: extract.False,
		CWritten: extract.True, CWrittenAt: pendingAts[(n+v)%2]}
	s.Pairs[1] = transform.PairState{S: extract.Unknown, DRaw: extract.False, CRaw: extract.Unknown,
		DWritten: extract.False, DWrittenAt: pendingAts[0] + int64(v)}
	return s
}

// orderPut is one put of a batch: contact n's snapshot of version v,
// through PutRead over the record read (read) or Put, with a decision for
// the log numbered seq.
type orderPut struct {
	n, v int
	read bool
	seq  uint32
}

// orderState is what a file holds, as its readers give it.
type orderState struct {
	records                map[int]transform.Snapshot
	totals                 Totals
	pkeys, pending, logIdx [][]byte
	log                    []LogEntry
}

func readOrderState(t *testing.T, st *Store) orderState {
	t.Helper()
	checkTotals(t, st, "after the batch")
	var s orderState
	var err error
	s.records = all(t, st)
	if s.totals, err = st.Totals(); err != nil {
		t.Fatal(err)
	}
	s.pkeys = indexEntries(t, st, bucketPKeys)
	s.pending = indexEntries(t, st, bucketPending)
	s.logIdx = indexEntries(t, st, bucketLogPacked)
	if err := st.QueryLog(LogQuery{}, func(e *LogEntry) error { s.log = append(s.log, *e); return nil }); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBatchInAnyOrder commits one batch of contacts twice, into two files
// alike: once in id order, once shuffled, a contact put twice in it, some
// puts over the record read. The commit sorts a batch's records (and its
// log's index keys) into key order, keeping a contact's puts in the order
// they came: both files then hold the same, the later put of a contact
// put twice with none of the earlier one's index keys.
func TestBatchInAnyOrder(t *testing.T) {
	const contacts = 160
	started := time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)
	var inOrder []orderPut
	want := map[int]transform.Snapshot{}
	seq := uint32(0)
	for n := range contacts {
		seq++
		// every third contact is on file: read over, except when put twice
		// (PutRead takes the record read as the one replaced)
		inOrder = append(inOrder, orderPut{n: n, v: 1, read: n%3 == 0 && n%10 != 0, seq: seq})
		want[n] = orderSnap(n, 1)
		if n%10 == 0 {
			seq++
			inOrder = append(inOrder, orderPut{n: n, v: 2, seq: seq})
			want[n] = orderSnap(n, 2)
		}
	}
	for n := contacts; n < contacts+20; n++ {
		if n%3 == 0 {
			want[n] = orderSnap(n, 0) // on file, not in the batch
		}
	}
	shuffled := slices.Clone(inOrder)
	rng := rand.New(rand.NewPCG(7, 11))
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	// A contact's two puts keep the order they were decided in, wherever
	// the shuffle placed them: the later one is what the file must hold.
	where := map[int][]int{}
	for i, p := range shuffled {
		where[p.n] = append(where[p.n], i)
	}
	for _, at := range where {
		if len(at) == 2 && shuffled[at[0]].v > shuffled[at[1]].v {
			shuffled[at[0]], shuffled[at[1]] = shuffled[at[1]], shuffled[at[0]]
		}
	}
	// A batch left in id order would not reach the sort; a contact's two
	// puts left side by side would not show that it keeps them in order
	// (get finds the put just before either way).
	parted := false
	for _, at := range where {
		parted = parted || len(at) == 2 && at[1]-at[0] > 1
	}
	if !parted || slices.IsSortedFunc(shuffled, func(a, b orderPut) int { return a.n - b.n }) {
		t.Fatal("the shuffle left the batch in id order, or each contact's puts side by side")
	}

	commit := func(t *testing.T, puts []orderPut) orderState {
		st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if ready, err := st.IndexesReady(); err != nil || !ready {
			t.Fatalf("a new file's indexes are not ready (%v): the commit would not write them", err)
		}
		b := st.NewBatch(0)
		for n := 0; n < contacts+20; n += 3 {
			s := orderSnap(n, 0)
			b.Put(id(n), &s)
		}
		if err := st.Commit(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		b = st.NewBatch(0)
		for _, p := range puts {
			s := orderSnap(p.n, p.v)
			if p.read {
				var old transform.Snapshot
				if found, err := r.Get(id(p.n), &old); err != nil || !found {
					t.Fatalf("contact %d: found=%v err=%v", p.n, found, err)
				}
				b.PutRead(r, id(p.n), &s)
			} else {
				b.Put(id(p.n), &s)
			}
			b.AddLog(LogEntry{RunStarted: started, Seq: p.seq, Contact: id(p.n), PKey: s.PKey, Pair: p.v % 2,
				Outcome: "applied", Rule: transform.RuleOnlyD365Changed}, "r1", testPairs)
		}
		r.Close()
		if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: started, Outcome: "ok"}}); err != nil {
			t.Fatal(err)
		}
		return readOrderState(t, st)
	}
	a := commit(t, inOrder)
	if !reflect.DeepEqual(a.records, want) {
		for n, s := range want {
			if a.records[n] != s {
				t.Errorf("in id order: contact %d holds %+v, want %+v", n, a.records[n], s)
			}
		}
		t.Fatalf("in id order: %d records, want %d", len(a.records), len(want))
	}
	if len(a.log) != len(inOrder) {
		t.Fatalf("in id order: %d log entries, want %d", len(a.log), len(inOrder))
	}
	b := commit(t, shuffled)
	for n, s := range a.records {
		if b.records[n] != s {
			t.Errorf("shuffled: contact %d holds %+v, want %+v", n, b.records[n], s)
		}
	}
	if len(b.records) != len(a.records) {
		t.Errorf("shuffled: %d records, in id order %d", len(b.records), len(a.records))
	}
	if !reflect.DeepEqual(b.totals, a.totals) {
		t.Errorf("shuffled: totals %+v, in id order %+v", b.totals, a.totals)
	}
	for _, x := range []struct {
		name     string
		got, was [][]byte
	}{{"PKey index", b.pkeys, a.pkeys}, {"index of pending writes", b.pending, a.pending}, {"log's index", b.logIdx, a.logIdx}} {
		if !slices.EqualFunc(x.got, x.was, bytes.Equal) {
			t.Errorf("shuffled: the %s holds %d keys, in id order %d (%s)", x.name, len(x.got), len(x.was), firstDiff(x.got, x.was))
		}
	}
	if !reflect.DeepEqual(b.log, a.log) {
		t.Errorf("shuffled: the log differs\n got %+v\nwant %+v", b.log, a.log)
	}
}
