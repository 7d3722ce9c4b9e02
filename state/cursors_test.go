package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"optsync/extract"
	"optsync/transform"
)

// TestReadPositions: the positions a run's reads end at are kept with its
// last transaction under the keys of how they were read, and the next run
// starts from them; Campaign's only with a changed-since filter.
func TestReadPositions(t *testing.T) {
	delta, wm := "https://org/api/data/v9.2/contacts?$deltatoken=1", "2026-11-29T01:00:00Z"
	if m := NextPositions(true, nil, nil); len(m) != 0 {
		t.Errorf("nothing read: %v", m)
	}
	if m := NextPositions(false, &wm, nil); len(m) != 1 || m[KeyD365Watermark] != wm {
		t.Errorf("watermark: %v", m)
	}
	st := openWith(t, filepath.Join(t.TempDir(), "optsync.db"), testPairs)
	defer st.Close()
	run := &Run{ID: "20261129T020000Z-aaaaaa", Command: "run", Started: time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC), Outcome: "running"}
	if err := st.BeginRun(run); err != nil {
		t.Fatal(err)
	}
	run.Outcome = "ok"
	fin := &Final{Run: run, Config: &ConfigRecord{Direction: "bidirectional", Policy: "newest", Pairs: testPairs},
		Meta: NextPositions(true, &delta, &wm)}
	if err := st.Commit(context.Background(), st.NewBatch(0), fin); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tracking, filtered bool
		d365, campaign     string
	}{{true, true, delta, wm}, {true, false, delta, ""}, {false, true, "", wm}} {
		d, c, err := st.ReadPositions(tc.tracking, tc.filtered)
		if err != nil || d != tc.d365 || c != tc.campaign {
			t.Errorf("tracking %v filtered %v: %q %q %v, want %q %q", tc.tracking, tc.filtered, d, c, err, tc.d365, tc.campaign)
		}
	}
}

// TestQueuedContacts: the queue's contacts whose Dynamics side state has
// seen come back as it knew them, placed by their place in the queue, with
// change times past the run's bound unknown; the others are not made up.
func TestQueuedContacts(t *testing.T) {
	st := openWith(t, filepath.Join(t.TempDir(), "optsync.db"), testPairs, 1, 2, 3, 4)
	defer st.Close()
	items := []RetryItem{{Contact: id(1)}, {Contact: id(2), PKey: "@kc", System: "campaign"}, {Contact: id(5)}, {Contact: id(4), System: "d365"}}
	rules := &transform.Rules{Pairs: testPairs}
	known, err := st.QueuedContacts(rules, items, -2000) // id 4 was modified at -1000: past the bound
	if err != nil {
		t.Fatal(err)
	}
	if len(known) != 2 || known[0].ID != id(2) || known[0].Line != 2 || known[1].ID != id(4) || known[1].Line != 4 {
		t.Fatalf("known %+v", known)
	}
	if known[0].Modified != -3000 || known[1].Modified != extract.NoTime || known[0].Values[0] != extract.True || known[0].Values[1] != extract.False {
		t.Errorf("contacts %+v", known)
	}
	q := Queued(items)
	if len(q) != 4 || q[1].PKey != "@kc" || !q[1].Campaign || q[3].Campaign {
		t.Errorf("queued %+v", q)
	}
}
