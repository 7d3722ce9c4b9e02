package state

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cached says which of the file's pages are in the page cache (mincore
// of a mapping of it).
func cached(t *testing.T, f *os.File) []bool {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	in := make([]bool, len(vec))
	for i, v := range vec {
		in[i] = v&1 != 0
	}
	return in
}

// The prefill puts the file's part past from in the page cache, what the
// file grows by after it began included, and leaves the part before from
// alone: a hole, never read, stays out of the cache.
func TestPrefillCachesWhatTheFileGrowsBy(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "grows"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps := int64(os.Getpagesize())
	if err := f.Truncate(64 * ps); err != nil { // a hole: nothing cached
		t.Fatal(err)
	}
	if in := cached(t, f); in[0] || in[63] {
		t.Skip("the file system caches a hole's pages unread: nothing to see")
	}
	p := startPrefill(f, 16*ps)
	if err := f.Truncate(2 * prefillChunk); err != nil { // grown past a read's size
		t.Fatal(err)
	}
	p.grown()
	p.stop()
	in := cached(t, f)
	for i, c := range in {
		if want := int64(i) >= 16; c != want {
			t.Fatalf("page %d of %d cached %v, want %v", i, len(in), c, want)
		}
	}
}

// A file cut short under the prefill, and one it cannot read, end nothing
// but the prefill: stop returns.
func TestPrefillOutlivesAFileCutShort(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "cut"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 * prefillChunk); err != nil {
		t.Fatal(err)
	}
	p := startPrefill(f, 0)
	if err := f.Truncate(prefillChunk / 2); err != nil {
		t.Fatal(err)
	}
	p.grown()
	f.Close()
	p.grown()
	p.stop()
	var none *prefill // a store without a file
	none.grown()
	none.stop()
}
