package state

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// inCache tells a page out of the page cache from one in it, without
// reading the first; willNeed asks for pages without fail.
func TestInCacheTellsWhatTheCacheHolds(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "pages"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps := uint64(os.Getpagesize())
	if _, err := f.WriteAt(make([]byte, 8*ps), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(8*ps), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	data := uintptr(unsafe.Pointer(&m[0]))
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if cached(t, f)[3] {
		t.Skip("the file system keeps its pages cached after DONTNEED")
	}
	if in, ok := inCache(data, 3, ps); in || !ok {
		t.Fatalf("page 3, dropped from the cache: in it %v (told %v)", in, ok)
	}
	if cached(t, f)[3] {
		t.Fatal("asking whether page 3 is cached read it")
	}
	if _, err := f.ReadAt(make([]byte, ps), int64(3*ps)); err != nil {
		t.Fatal(err)
	}
	if in, ok := inCache(data, 3, ps); !in || !ok {
		t.Fatalf("page 3, just read: in the cache %v (told %v)", in, ok)
	}
	if err := willNeed(f, 5, 2, ps); err != nil {
		t.Fatal(err)
	}
}
