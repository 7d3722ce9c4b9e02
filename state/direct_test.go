package state

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// directFileOf is a new spill file in a test's folder, written past the
// page cache (skipped where the file system does not take O_DIRECT).
func directFileOf(t *testing.T) *directFile {
	t.Helper()
	f, err := spill.TempFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	d, ok := newDirectFile(f)
	if !ok {
		t.Skip("the test's folder does not take O_DIRECT")
	}
	return d
}

// What is written through a directFile in writes of any size and
// alignment, flushed or not between them, comes back byte for byte, and
// no more: the padding of the last block is not read.
func TestDirectFileGivesBackWhatWasWritten(t *testing.T) {
	big := alignedBytes(3*directChunk + 2*directAlign)
	for i := range big {
		big[i] = byte(i*7 + i>>12)
	}
	for _, tc := range []struct {
		name   string
		writes [][]byte
		flush  bool // after each write
	}{
		{"nothing", nil, false},
		{"one byte", [][]byte{{42}}, false},
		{"a block less one", [][]byte{big[1:directAlign]}, false},
		{"a block", [][]byte{big[:directAlign]}, false},
		{"a block and one", [][]byte{big[:directAlign+1]}, false},
		{"aligned runs of blocks, written as they are", [][]byte{big[:2*directChunk+directAlign], big[:3*directChunk+5]}, false},
		{"unaligned, past a chunk", [][]byte{big[3 : directChunk+7], big[5 : 2*directChunk]}, false},
		{"small writes flushed between", [][]byte{big[:10], big[10:5000], big[5000 : directAlign+9000], big[:1]}, true},
		{"a flush then aligned blocks", [][]byte{big[:100], big[:2*directAlign]}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := directFileOf(t)
			var want []byte
			for _, w := range tc.writes {
				if n, err := d.Write(w); err != nil || n != len(w) {
					t.Fatalf("Write of %d bytes: %d, %v", len(w), n, err)
				}
				want = append(want, w...)
				if tc.flush {
					if err := d.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(d.reader())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) || string(got) != string(want) {
				t.Fatalf("read back %d bytes, not the %d written as they were", len(got), len(want))
			}
		})
	}
}

// A file shorter than what was written (cut under the reader) is an
// error naming the file, never an end of the entries.
func TestDirectFileTellsACutFile(t *testing.T) {
	d := directFileOf(t)
	b := alignedBytes(3 * directAlign)
	if _, err := d.Write(b[:2*directAlign+10]); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.f.Truncate(directAlign); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(d.reader())
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "spill") {
		t.Fatalf("a cut file read back: %v, want an unexpected end naming the file", err)
	}
}

// A write that fails is the Write's error, and a read that fails the
// Read's.
func TestDirectFileReturnsIOErrors(t *testing.T) {
	d := directFileOf(t)
	ro, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	d.f = ro // not open for writing, nor holding what is read
	if _, err := d.Write(alignedBytes(directAlign)); err == nil {
		t.Fatal("a write to a file not open for it returned no error")
	}
	d.size = directAlign
	if _, err := io.ReadAll(d.reader()); err == nil {
		t.Fatal("a read of a file without the bytes written returned no error")
	}
}

// Past its budget Dirty writes its entries past the page cache where the
// file system takes it, and reads them back from there.
func TestDirtySpillsPastThePageCache(t *testing.T) {
	directFileOf(t) // skips where O_DIRECT is not taken
	d := NewDirty(64, t.TempDir(), nil, nil, nil, 100)
	defer d.Close()
	for i := range 100 {
		e := dirtyEntryForTest(i)
		if err := d.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	if d.direct == nil {
		t.Fatal("Dirty spilled through the page cache where O_DIRECT is taken")
	}
	next, err := d.reader()
	if err != nil {
		t.Fatal(err)
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
