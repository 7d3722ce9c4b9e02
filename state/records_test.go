package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"optsync/transform"
)

// A contact keeps its Dynamics ETag exactly as the API sent it, whatever it
// looks like.
func TestETagRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tags := []string{`W/"4801245"`, `W/"2026-11-20T10:00:00.000Z"`, `"opaque, with \"quotes\""`, ""}
	b := st.NewBatch(0)
	for n, tag := range tags {
		s := snap(n)
		s.DETag = tag
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n, tag := range tags {
		var got transform.Snapshot
		if ok, err := r.Get(id(n), &got); !ok || err != nil {
			t.Fatalf("contact %d: %v %v", n, ok, err)
		}
		want := snap(n)
		want.DETag = tag
		if got != want {
			t.Errorf("contact %d: got %+v, want %+v", n, got, want)
		}
	}
}

// Records of the older layouts are still read. Version 1 (the released
// one) held a row version parsed out of the ETag: every field but that one
// is read, and it is not turned back into an ETag it may never have been.
// Versions 2 and 3 (never released: builds between wrote them) held the
// ETag, and 3 when each agreement was reached; 4 the runs of pending
// writes, and neither the conflict flag nor the Campaign fields' own times
// (they read as none). In all three a pending
// write's run reads as "not recorded" (0), and in 1 and 2 an agreement's
// time as not known (0). Re-encoded (a mapping dropped, a reset), they are
// written in the current layout, with nothing lost and nothing made up.
func TestOlderRecordVersionsAreStillRead(t *testing.T) {
	const decided, month = 1_790_000_000, 30 * 86400
	for _, tt := range []struct {
		version byte
		etag    string
		agreed  int64 // when pair 0's agreement was reached, as read
	}{
		{1, "", 0},
		{2, `W/"4801245"`, 0},
		{2, "", 0},
		{3, `W/"4801245"`, decided - month},
		{4, `W/"4801245"`, decided - month},
	} {
		t.Run(fmt.Sprintf("version %d etag %q", tt.version, tt.etag), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			st, err := Open(path, testPairs)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			want := snap(3) // a pending write on each side, no run recorded
			want.DETag, want.Decided = tt.etag, decided
			// version flags varint(DModified) varint(CModified) varint(Decided),
			// then varint(DVersion) (1) or uvarint(len) DETag (2),
			// uvarint(len) PKey count, then 3 bytes per pair
			v := []byte{tt.version, 0}
			v = binary.AppendVarint(v, want.DModified)
			v = binary.AppendVarint(v, want.CModified)
			v = binary.AppendVarint(v, want.Decided)
			if tt.version == 1 {
				v = binary.AppendVarint(v, 4801245)
			} else {
				v = binary.AppendUvarint(v, uint64(len(tt.etag)))
				v = append(v, tt.etag...)
			}
			v = binary.AppendUvarint(v, uint64(len(want.PKey)))
			v = append(v, want.PKey...)
			v = append(v, byte(len(st.pairIDs)))
			for i, pid := range st.pairIDs {
				p := want.Pairs[i]
				f := uint16(p.S) | uint16(p.DRaw)<<2 | uint16(p.CRaw)<<4 | uint16(p.DWritten)<<6 | uint16(p.CWritten)<<8
				if tt.version == 4 && i == 0 {
					// bit 10 meant nothing in version 4: not a field time
					f |= pairCTime
				}
				v = append(v, pid, byte(f), byte(f>>8))
				if tt.version == 4 { // write times: 0, not recorded
					if p.DWritten.Known() {
						v = binary.AppendUvarint(v, 0)
					}
					if p.CWritten.Known() {
						v = binary.AppendUvarint(v, 0)
					}
				}
			}
			if tt.version >= 3 { // pair 0 agreed a month before Decided
				v = binary.AppendVarint(append(v, st.pairIDs[0]), month)
			}
			get := func(v []byte) transform.Snapshot {
				t.Helper()
				var got transform.Snapshot
				if err := st.decode(v, &got, st.slots()); err != nil {
					t.Fatal(err)
				}
				return got
			}
			if got := get(v); got != want {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
			pr, err := parseRecord(v)
			if err != nil {
				t.Fatal(err)
			}
			var entries []pairEntry
			if err := pr.eachPair(func(e pairEntry) { entries = append(entries, e) }); err != nil {
				t.Fatal(err)
			}
			re := appendRecord(nil, pr, entries)
			if re[0] != recordVersion {
				t.Fatalf("re-encoded as version %d", re[0])
			}
			if got := get(re); got != want {
				t.Fatalf("re-encoded: got  %+v\nwant %+v", got, want)
			}
			rr, err := parseRecord(re)
			if err != nil {
				t.Fatal(err)
			}
			for what, r := range map[string]*record{"as stored": &pr, "re-encoded": &rr} {
				if a := st.agreed(r); a != (Agreed{tt.agreed}) {
					t.Errorf("%s: agreed %v, want pair 0 since %d", what, a, tt.agreed)
				}
			}
		})
	}
}

// The current layout keeps everything both features store side by side: the
// ETag as read and, per pending write, the start of the run that wrote it.
func TestRecordKeepsETagAndWriteTimes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	want := snap(5)
	want.DETag = `W/"2026-11-20T10:00:00.000Z"`
	want.Pairs[0].CWrittenAt = 1_780_000_000_123
	want.Pairs[1].DWrittenAt = 1_780_000_100_456
	b := st.NewBatch(1)
	b.Put(id(5), &want)
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got transform.Snapshot
	if ok, err := r.Get(id(5), &got); !ok || err != nil || got != want {
		t.Fatalf("%v %v\n got %+v\nwant %+v", ok, err, got, want)
	}
	if n, sealed := schemaOf(t, st); n != SchemaVersion || !sealed {
		t.Errorf("schema %d (sealed %v), want %d", n, sealed, SchemaVersion)
	}
}

// Version 5 keeps whether Campaign showed two or more profiles for the
// contact, and each Campaign field's own change time — before, after or
// equal to lastModified, the epoch included — next to everything else.
func TestRecordKeepsConflictAndFieldTimes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cases := map[int]func(*transform.Snapshot){
		1: func(s *transform.Snapshot) { s.CConflict = true },
		2: func(s *transform.Snapshot) {
			s.Pairs[0].CTime, s.Pairs[0].CTimeKnown = s.CModified-86_400_000, true
			s.Pairs[1].CTime, s.Pairs[1].CTimeKnown = s.CModified+5, true
		},
		3: func(s *transform.Snapshot) {
			s.CConflict, s.DSeen = true, true
			s.Pairs[1].CTime, s.Pairs[1].CTimeKnown = 0, true // the epoch is a time
			s.Pairs[0].CWrittenAt = 1_780_000_000_123
		},
		4: func(s *transform.Snapshot) {}, // neither
	}
	b := st.NewBatch(len(cases))
	want := map[int]transform.Snapshot{}
	for n := 1; n <= len(cases); n++ {
		s := snap(n)
		cases[n](&s)
		want[n] = s
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n := 1; n <= len(cases); n++ {
		var got transform.Snapshot
		if ok, err := r.Get(id(n), &got); !ok || err != nil || got != want[n] {
			t.Errorf("contact %d: %v %v\n got %+v\nwant %+v", n, ok, err, got, want[n])
		}
		// re-encoded entry by entry (a mapping dropped, a reset), nothing is lost
		pr, err := parseRecord(r.v)
		if err != nil {
			t.Fatal(err)
		}
		var entries []pairEntry
		if err := pr.eachPair(func(e pairEntry) { entries = append(entries, e) }); err != nil {
			t.Fatal(err)
		}
		var again transform.Snapshot
		if err := st.decode(appendRecord(nil, pr, entries), &again, st.slots()); err != nil || again != want[n] {
			t.Errorf("contact %d re-encoded: %v\n got %+v\nwant %+v", n, err, again, want[n])
		}
	}
}
