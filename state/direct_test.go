package state

import (
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// Past its budget Dirty writes its entries past the page cache where the
// file system takes it, and reads them back from there.
func TestDirtySpillsPastThePageCache(t *testing.T) {
	f, err := spill.TempFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, ok := spill.NewDirect(f, 4096)
	f.Close()
	if !ok {
		t.Skip("the test's folder does not take O_DIRECT")
	}
	d := NewDirty(64, t.TempDir(), nil, nil, nil, 100)
	defer d.Close()
	for i := range 100 {
		e := dirtyEntryForTest(i)
		if err := d.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	next, err := d.reader()
	if err != nil {
		t.Fatal(err)
	}
	if d.direct == nil {
		t.Fatal("Dirty spilled through the page cache where O_DIRECT is taken")
	}
	for i := range 100 {
		var e, want = dirtyEntryForTest(i), dirtyEntryForTest(i)
		ok, err := next(&e)
		if err != nil || !ok {
			t.Fatalf("entry %d: %v, %v", i, ok, err)
		}
		if e.ID != want.ID || e.C != want.C {
			t.Fatalf("entry %d back as %v, want %v", i, e.C, want.C)
		}
	}
	if ok, err := next(new(transform.Entry)); ok || err != nil {
		t.Fatalf("past the last entry: %v, %v", ok, err)
	}
}

func dirtyEntryForTest(i int) transform.Entry {
	return transform.Entry{Kind: transform.EntryPair, ID: id(i), HasC: true,
		C: extract.Contact{ID: id(i), Modified: int64(i) * 1000, Line: int32(i + 2)}, CI: -1, PI: -1}
}
