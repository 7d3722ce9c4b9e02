package spill

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"strings"
	"testing"
)

// directChunk is the buffer of the tests' Direct files.
const directChunk = 64 << 10

// directFileOf is a new spill file in a test's folder, written past the
// page cache (skipped where the file system does not take O_DIRECT).
func directFileOf(t *testing.T, bufSize int) *Direct {
	t.Helper()
	f, err := TempFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	d, ok := NewDirect(f, bufSize)
	if !ok {
		t.Skip("the test's folder does not take O_DIRECT")
	}
	return d
}

// What is written through a directFile in writes of any size and
// alignment, flushed or not between them, comes back byte for byte, and
// no more: the padding of the last block is not read.
func TestDirectFileGivesBackWhatWasWritten(t *testing.T) {
	big := AlignedBytes(3*directChunk + 2*directAlign)
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
			d := directFileOf(t, directChunk)
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
			got, err := io.ReadAll(d.Reader())
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
	d := directFileOf(t, directChunk)
	b := AlignedBytes(3 * directAlign)
	if _, err := d.Write(b[:2*directAlign+10]); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.f.Truncate(directAlign); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(d.Reader())
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "spill") {
		t.Fatalf("a cut file read back: %v, want an unexpected end naming the file", err)
	}
}

// A write that fails is the Write's error, and a read that fails the
// Read's.
func TestDirectFileReturnsIOErrors(t *testing.T) {
	d := directFileOf(t, directChunk)
	ro, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	d.f = ro // not open for writing, nor holding what is read
	if _, err := d.Write(AlignedBytes(directAlign)); err == nil {
		t.Fatal("a write to a file not open for it returned no error")
	}
	d.size = directAlign
	if _, err := io.ReadAll(d.Reader()); err == nil {
		t.Fatal("a read of a file without the bytes written returned no error")
	}
}

// A flushed file holds exactly what was written, read the ordinary way
// (an output file is read by others): its last part block is not padded,
// and it is written whole again once more comes.
func TestDirectFlushLeavesTheFileAsWritten(t *testing.T) {
	d := directFileOf(t, directChunk)
	src := AlignedBytes(3 * directChunk)
	for i := range src {
		src[i] = byte('a' + i%26)
	}
	var want []byte
	for _, n := range []int{5, directAlign - 5, 100, directChunk, 3, 2*directChunk - 108 + 7} {
		w := src[:n]
		if _, err := d.Write(w); err != nil {
			t.Fatal(err)
		}
		want = append(want, w...)
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", d.f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("after %d bytes flushed the file holds %d bytes, not them", len(want), len(got))
		}
	}
	got, err := io.ReadAll(d.Reader())
	if err != nil || string(got) != string(want) {
		t.Fatalf("read back past the cache: %d bytes, %v; want the %d written", len(got), err, len(want))
	}
}

// A write the file system refuses past the page cache (EINVAL: here an
// offset out of alignment) is made through it, and so is every write
// and read after: never an error where the page cache would do.
func TestDirectFallsBackToThePageCache(t *testing.T) {
	d := directFileOf(t, directChunk)
	b := AlignedBytes(2 * directAlign)
	for i := range b {
		b[i] = byte(i%251 + 1)
	}
	if err := d.writeAt(b[:directAlign], 1); err != nil {
		t.Fatalf("a write out of alignment: %v, want it made through the page cache", err)
	}
	if d.fl&oDirect != 0 {
		t.Fatal("still writing past the page cache after a refused write")
	}
	got, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", d.f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != directAlign+1 || string(got[1:]) != string(b[:directAlign]) {
		t.Fatalf("the file holds %d bytes, not the block written at 1", len(got))
	}
	// a read refused past the page cache likewise (here: its buffer out
	// of alignment)
	d3 := directFileOf(t, directChunk)
	if _, err := d3.Write(b[:directAlign+10]); err != nil {
		t.Fatal(err)
	}
	if err := d3.Flush(); err != nil {
		t.Fatal(err)
	}
	d3.buf = d3.buf[1:]
	back, err := io.ReadAll(d3.Reader())
	if err != nil || string(back) != string(b[:directAlign+10]) {
		t.Fatalf("read past a refused read: %d bytes, %v", len(back), err)
	}
	if d3.fl&oDirect != 0 {
		t.Fatal("still reading past the page cache after a refused read")
	}
	d2 := directFileOf(t, directChunk)
	d2.fl &^= oDirect // as after a refused write
	if _, err := unix.FcntlInt(d2.fd, unix.F_SETFL, d2.fl); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Write(b[3 : directAlign+5]); err != nil {
		t.Fatal(err)
	}
	if err := d2.Flush(); err != nil {
		t.Fatal(err)
	}
	back, err = io.ReadAll(d2.Reader())
	if err != nil || string(back) != string(b[3:directAlign+5]) {
		t.Fatalf("read back through the page cache: %d bytes, %v", len(back), err)
	}
}
