package spill

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"optsync/fixtures/testkit"
)

// TestRunEntsOnHugePages checks that a run's entries, once written, lie on
// 2 MB pages, where a mapping of the same size without the advice has none
// (the control).
func TestRunEntsOnHugePages(t *testing.T) {
	if ok, mode := testkit.HugePagesAdvised(); !ok {
		t.Skipf("transparent huge pages are not \"madvise\" here (%s): the advice changes nothing", mode)
	}
	const size = 16 << 20
	control, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(control)
	for i := 0; i < size; i += 4096 {
		control[i] = 1
	}
	at := uintptr(unsafe.Pointer(unsafe.SliceData(control)))
	if m, err := testkit.MappedIn(at, at+size); err != nil || m.AnonHuge != 0 || m.Has("hg") {
		t.Fatalf("a mapping without advice: %+v, %v; want no huge pages: the control would show nothing", m, err)
	}

	r := newRunEnts(size / int(unsafe.Sizeof(ent{})))
	defer r.free()
	if r.mem == nil {
		t.Fatal("16 MB of entries are on the heap, not mapped")
	}
	for k := range r.ents {
		r.ents[k] = ent{key: uint64(k), at: int64(k)}
	}
	at = uintptr(unsafe.Pointer(unsafe.SliceData(r.mem)))
	m, err := testkit.MappedIn(at, at+uintptr(len(r.mem)))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Has("hg") {
		t.Error("the entries' mapping is not advised to use huge pages (no hg flag)")
	}
	// 16 MB written: at least one whole 2 MB page, even if the kernel found
	// no free huge page for the others.
	if m.AnonHuge < 2<<20 {
		t.Errorf("entries written: %d KB on huge pages, want at least 2048", m.AnonHuge>>10)
	}
	t.Logf("16 MB of entries written: %d KB on huge pages", m.AnonHuge>>10)
}
