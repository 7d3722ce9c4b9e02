package state

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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

// Records of version 1 held a row version parsed out of the ETag: they are
// still read, every field but that one, which is not turned back into an
// ETag it may never have been.
func TestRecordVersion1IsStillRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := snap(3)
	// version 1: version flags varint(DModified) varint(CModified)
	// varint(Decided) varint(DVersion) uvarint(len) PKey count pairs
	v := []byte{1, 0}
	v = binary.AppendVarint(v, want.DModified)
	v = binary.AppendVarint(v, want.CModified)
	v = binary.AppendVarint(v, want.Decided)
	v = binary.AppendVarint(v, 4801245)
	v = binary.AppendUvarint(v, uint64(len(want.PKey)))
	v = append(v, want.PKey...)
	v = append(v, byte(len(st.pairIDs)))
	for i, pid := range st.pairIDs {
		p := want.Pairs[i]
		f := uint16(p.S) | uint16(p.DRaw)<<2 | uint16(p.CRaw)<<4 | uint16(p.DWritten)<<6 | uint16(p.CWritten)<<8
		v = append(v, pid, byte(f), byte(f>>8))
	}
	key := id(3)
	if err := st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketContacts).Put(key[:], v) }); err != nil {
		t.Fatal(err)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got transform.Snapshot
	if ok, err := r.Get(key, &got); !ok || err != nil {
		t.Fatalf("%v %v", ok, err)
	}
	if got != want || got.DETag != "" {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// Re-encoding (a mapping dropped) writes version 2: the ETag layout,
	// without agreement times, which a version 1 record does not know.
	pr, err := parseRecord(v)
	if err != nil {
		t.Fatal(err)
	}
	if re, err := appendRecord(nil, pr, pr.pairs); err != nil || re[0] != 2 {
		t.Fatalf("re-encoded as version %d (%v)", re[0], err)
	}
}
