package state

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// releasedPairs are the mappings of the run that wrote testdata/released-v1.db
// (see testdata/README.md).
var releasedPairs = []transform.Pair{
	{D365: "donotemail", Campaign: "blackListEmail"},
	{D365: "xx_smsconsent", Campaign: "blackListMobile", Invert: true},
}

// copyReleased copies the released build's state file into a temporary
// folder.
func copyReleased(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "released-v1.db.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "optsync.db")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// releasedID is contact n as the released build's state file holds it:
// the ids of testdata/released-v1.db, not the kit's.
func releasedID(n int) extract.ID {
	id, ok := extract.ParseID(fmt.Sprintf("00000000-0000-4000-8000-%012d", n))
	if !ok {
		panic(n)
	}
	return id
}

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

// A state file written by the last released build (schema 1, every record
// version 1, with the row versions it parsed out of Dataverse's ETags and
// pending writes to both systems' update files) is read by this build: every
// snapshot as that build knew it, the row version dropped (no ETag is made
// up from it), the pending writes' runs "not recorded". A commit stores the
// current schema and writes the records it puts in the current layout; the
// others are still read as they are.
func TestReadsStateOfTheReleasedBuild(t *testing.T) {
	path := copyReleased(t)
	raw, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	// What the file holds, as written: schema 1, version 1 records, and the
	// contacts read through the API carry a row version.
	versions := map[byte]int{}
	rowVersions := 0
	if err := raw.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != "1" {
			t.Errorf("the fixture has schema %q, want 1", v)
		}
		return tx.Bucket(bucketContacts).ForEach(func(_, v []byte) error {
			versions[v[0]]++
			r, err := parseRecord(v)
			if err != nil {
				return err
			}
			if r.version == 1 {
				rest := v[2:]
				for range 3 {
					_, n := binary.Varint(rest)
					rest = rest[n:]
				}
				if dv, _ := binary.Varint(rest); dv != 0 {
					rowVersions++
				}
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if versions[1] != 5 || len(versions) != 1 || rowVersions != 4 {
		t.Fatalf("the fixture holds record versions %v with %d row versions; want 5 records of version 1, 4 with a row version", versions, rowVersions)
	}
	raw.Close()
	// A run seals it whole as it opens it; the records keep their layout.
	st, err := Open(path, releasedPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n, sealed := schemaOf(t, st); n != SchemaVersion || !sealed {
		t.Fatalf("opened for a run: schema %d, sealed %v", n, sealed)
	}

	d, c := ms("2025-03-01T10:00:00Z"), ms("2025-02-01T09:00:00Z")
	var decided int64
	T, F, U := extract.True, extract.False, extract.Unknown
	want := map[int]transform.Snapshot{
		// donotemail true against an older false: an opt-out written to
		// Campaign's update file, pending; xx_smsconsent true (opted out:
		// false) agrees with blackListMobile false.
		1: {Known: true, DSeen: true, CSeen: true, DModified: d, CModified: c, PKey: "@p1",
			Pairs: [extract.MaxFields]transform.PairState{
				{S: T, DRaw: T, CRaw: F, CWritten: T},
				{S: F, DRaw: F, CRaw: F},
			}},
		// Campaign newer with both opt-outs: written to Dynamics' update
		// file, pending (donotemail true, xx_smsconsent false).
		2: {Known: true, DSeen: true, CSeen: true, DModified: d, CModified: ms("2025-04-01T09:00:00Z"), PKey: "@p2",
			Pairs: [extract.MaxFields]transform.PairState{
				{S: T, DRaw: F, CRaw: T, DWritten: T},
				{S: T, DRaw: F, CRaw: T, DWritten: T},
			}},
		// Dynamics newer: xx_smsconsent false (opted out: true) against
		// blackListMobile true: the same, nothing to write.
		3: {Known: true, DSeen: true, CSeen: true, DModified: d, CModified: c, PKey: "@p3",
			Pairs: [extract.MaxFields]transform.PairState{
				{S: F, DRaw: F, CRaw: F},
				{S: T, DRaw: T, CRaw: T},
			}},
		// a contact without a profile, and a profile without a contact
		4: {Known: true, DSeen: true, DModified: d,
			Pairs: [extract.MaxFields]transform.PairState{{DRaw: T}, {DRaw: U}}},
		5: {Known: true, CSeen: true, CModified: c, PKey: "@p5",
			Pairs: [extract.MaxFields]transform.PairState{{CRaw: T}, {CRaw: F}}},
	}
	check := func(what string) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for n, w := range want {
			var got transform.Snapshot
			ok, err := r.Get(releasedID(n), &got)
			if err != nil || !ok {
				t.Fatalf("%s: contact %d: %v %v", what, n, ok, err)
			}
			if decided == 0 {
				decided = got.Decided // when the fixture was made
			}
			w.Decided = decided
			if got != w {
				t.Errorf("%s: contact %d\n got %+v\nwant %+v", what, n, got, w)
			}
		}
	}
	check("as released")
	if decided <= 0 {
		t.Fatalf("the released records hold no decision time")
	}

	// This build writes contact 3 with an ETag and a pending write's run.
	three := want[3]
	three.Decided = decided
	three.DETag = `W/"4801245"`
	three.Pairs[0].CWritten, three.Pairs[0].CWrittenAt = T, 1_780_000_000_123
	b := st.NewBatch(1)
	b.Put(releasedID(3), &three)
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r-new", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	want[3] = three
	check("after a commit")
	if err := st.db.View(func(tx *bolt.Tx) error {
		if n, _, _ := readSchema(tx.Bucket(bucketMeta).Get(keySchema)); n != SchemaVersion {
			t.Errorf("schema %d after a commit, want %d", n, SchemaVersion)
		}
		k3, k1 := releasedID(3), releasedID(1)
		if v := st.records(tx.Bucket(bucketContacts)).Get(k3[:]); v[0] != recordVersion {
			t.Errorf("contact 3 written as version %d", v[0])
		}
		if v := st.records(tx.Bucket(bucketContacts)).Get(k1[:]); v[0] != 1 {
			t.Errorf("contact 1, not written, is version %d", v[0])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A maintenance rewrite puts every record it changes in the current
	// layout, and loses nothing.
	if _, err := st.Reset(context.Background(), releasedPairs[:1]); err != nil {
		t.Fatal(err)
	}
	for n, w := range want {
		if w.Pairs[0].S != U {
			w.Pairs[0].S = U
			want[n] = w
		}
	}
	check("after a reset")
}
