package state

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"optsync/fixtures/testkit"
)

// mapFile maps a file of n pages, written (so the page cache holds them
// all), read-only and shared, as bbolt maps the state file (opened for
// writing, as a run's store is).
func mapFile(t *testing.T, n int) []byte {
	t.Helper()
	return mapFileAt(t, filepath.Join(t.TempDir(), "m"), n)
}

// mapFileAt is mapFile, the file at path.
func mapFileAt(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, os.Getpagesize())
	for i := range n {
		page[0] = byte(i)
		if _, err := f.Write(page); err != nil {
			t.Fatal(err)
		}
	}
	m, err := unix.Mmap(int(f.Fd()), 0, n*len(page), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}

// smapsOf is the Rss (bytes) and VmFlags /proc/self/smaps gives the
// mapping of m.
func smapsOf(t *testing.T, m []byte) (rss int64, flags []string) {
	t.Helper()
	return smapsAt(t, uintptr(unsafe.Pointer(&m[0])))
}

// smapsAt is smapsOf for the mapping that starts at at.
func smapsAt(t *testing.T, at uintptr) (rss int64, flags []string) {
	t.Helper()
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip(err)
	}
	m, err := testkit.MappedIn(at, at+1)
	if err != nil {
		t.Fatal(err)
	}
	return m.Rss, m.Flags
}

// mustQuiet fails the test where the system should have let begin turn
// fault-around off (Linux 6.7 or later, whose userfaultfd takes
// asynchronous write protection, and a userfaultfd to be had), and skips
// it elsewhere.
func mustQuiet(t *testing.T, err error) {
	t.Helper()
	release, ok := kernelAtLeast(6, 7)
	if !ok {
		t.Skipf("Linux %s keeps fault-around (%v)", release, err)
	}
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(unix.O_CLOEXEC|uffdUserModeOnly), 0, 0)
	if errno != 0 {
		t.Skipf("no userfaultfd here (%v): fault-around stays on", errno)
	}
	unix.Close(int(fd))
	t.Fatalf("Linux %s gives a userfaultfd, yet fault-around could not be turned off: %v", release, err)
}

// kernelAtLeast says whether the running kernel is major.minor or later.
func kernelAtLeast(major, minor int) (release string, ok bool) {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "(unknown)", false
	}
	release = unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return release, false
	}
	return release, ma > major || ma == major && mi >= minor
}

func touch(m []byte, page int) byte {
	return *(*byte)(unsafe.Pointer(&m[page*os.Getpagesize()]))
}

func TestQuietMappingFaultsInOnlyThePageRead(t *testing.T) {
	m := mapFile(t, 64)
	ps := int64(os.Getpagesize())
	if got := touch(m, 8); got != 8 {
		t.Fatalf("page 8 reads %d", got)
	}
	rss, _ := smapsOf(t, m)
	if rss <= ps {
		t.Skipf("one fault mapped %d bytes without a userfaultfd: this kernel does not fault around, nothing to turn off", rss)
	}
	if err := unix.Madvise(m, unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	var q quietFaults
	quiet, err := q.begin(uintptr(unsafe.Pointer(&m[0])))
	if !quiet {
		mustQuiet(t, err)
	}
	if _, flags := smapsOf(t, m); !slices.Contains(flags, "uw") {
		t.Fatalf("registered, the mapping's flags are %v, without uw", flags)
	}
	for _, p := range []int{8, 9, 40} {
		if got := touch(m, p); got != byte(p) {
			t.Fatalf("page %d reads %d", p, got)
		}
	}
	if rss, _ := smapsOf(t, m); rss != 3*ps {
		t.Fatalf("three pages read mapped %d bytes, want %d", rss, 3*ps)
	}
	q.end()
	if _, flags := smapsOf(t, m); slices.Contains(flags, "uw") {
		t.Fatalf("after end the mapping's flags are %v, still with uw", flags)
	}
	if got := touch(m, 24); got != 24 {
		t.Fatalf("page 24 reads %d", got)
	}
	if rss, _ := smapsOf(t, m); rss <= 4*ps {
		t.Fatalf("after end a fault mapped %d bytes more: fault-around is still off", rss-3*ps)
	}
}

func TestQuietFollowsTheFileMappedAgain(t *testing.T) {
	a, b := mapFile(t, 16), mapFile(t, 32)
	var q quietFaults
	if err := q.follow(uintptr(unsafe.Pointer(&b[0]))); err != nil {
		t.Fatal(err)
	}
	if _, flags := smapsOf(t, b); slices.Contains(flags, "uw") {
		t.Fatal("follow registered a mapping before begin")
	}
	quiet, err := q.begin(uintptr(unsafe.Pointer(&a[0])))
	if !quiet {
		mustQuiet(t, err)
	}
	if err := q.follow(uintptr(unsafe.Pointer(&b[0]))); err != nil {
		t.Fatal(err)
	}
	if _, flags := smapsOf(t, b); !slices.Contains(flags, "uw") {
		t.Fatalf("the mapping followed has flags %v, without uw", flags)
	}
	q.end()
	for _, m := range [][]byte{a, b} {
		if _, flags := smapsOf(t, m); slices.Contains(flags, "uw") {
			t.Fatalf("after end a mapping has flags %v, still with uw", flags)
		}
	}
}

func TestMappingIn(t *testing.T) {
	maps := `00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x
a0000000-e0000000 r--s 00000000 fe:01 1234 /tmp/s.db
e0000000-e0021000 rw-p 00000000 00:00 0
`
	for _, c := range []struct {
		start uintptr
		want  uintptr
		ok    bool
	}{
		{0xa0000000, 0x40000000, true}, // addresses a 32-bit uintptr holds too
		{0x400000, 0x52000, true},
		{0xa0001000, 0, false}, // inside a mapping, not its start
		{0x1000, 0, false},
	} {
		got, err := mappingIn(strings.NewReader(maps), c.start)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("mappingIn(%x) = %x, %v; want %x (found: %v)", c.start, got, err, c.want, c.ok)
		}
	}
	if _, err := mappingIn(strings.NewReader("7f00-7e00 r--s 0 0:0 0\n"), 0x7f00); err == nil {
		t.Error("a mapping that ends before it starts was taken")
	}
}

func TestNightCommitQuietsTheStateMapping(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "s.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := st.db.Info().Data
	quiet, end := st.beginQuiet(zerolog.Nop())
	if !quiet {
		mustQuiet(t, errors.New("beginQuiet refused"))
	}
	if _, flags := smapsAt(t, start); !slices.Contains(flags, "uw") {
		t.Fatalf("the state file's mapping has flags %v, without uw", flags)
	}
	// A write transaction with the mapping quiet commits as any other.
	if err := st.update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("quiet"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	end()
	if _, flags := smapsAt(t, st.db.Info().Data); slices.Contains(flags, "uw") {
		t.Fatalf("after end the mapping has flags %v, still with uw", flags)
	}
}

func TestQuietPopulateMapsThePagesNamed(t *testing.T) {
	m := mapFile(t, 64)
	ps := uint64(os.Getpagesize())
	var q quietFaults
	q.populate(m, ps, []uint64{3}) // not quiet: nothing
	if rss, _ := smapsOf(t, m); rss != 0 {
		t.Fatalf("populate mapped %d bytes while fault-around was on", rss)
	}
	quiet, err := q.begin(uintptr(unsafe.Pointer(&m[0])))
	if !quiet {
		mustQuiet(t, err)
	}
	defer q.end()
	// out of order, repeated, adjacent, and one past the file's bytes
	q.populate(m[:40*ps], ps, []uint64{9, 3, 4, 9, 40, 3})
	if q.noPopulate {
		// process_madvise takes any advice for the process itself since 6.13
		if release, ok := kernelAtLeast(6, 13); !ok {
			t.Skipf("Linux %s's process_madvise does not populate", release)
		}
		t.Fatal("process_madvise refused to populate")
	}
	if rss, _ := smapsOf(t, m); rss != int64(3*ps) {
		t.Fatalf("populating pages 3, 4 and 9 mapped %d bytes, want %d", rss, 3*ps)
	}
	if got := len(q.iov); got != 2 {
		t.Fatalf("pages 3, 4 and 9 made %d ranges, want 2", got)
	}
	for _, p := range []int{3, 4, 9} {
		if got := touch(m, p); got != byte(p) {
			t.Fatalf("page %d reads %d", p, got)
		}
	}
	if rss, _ := smapsOf(t, m); rss != int64(3*ps) {
		t.Fatalf("reading the pages populated mapped more: %d bytes", rss)
	}
}

// A mapping the kernel will not register (a file opened read-only: its
// shared mapping can never be made writable) leaves fault-around on, and
// the process does not ask again.
func TestQuietRefusedKeepsFaultAround(t *testing.T) {
	w := mapFile(t, 16)
	path := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(path, make([]byte, 16*os.Getpagesize()), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ro, err := unix.Mmap(int(f.Fd()), 0, 16*os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(ro)
	var q quietFaults
	quiet, err := q.begin(uintptr(unsafe.Pointer(&ro[0])))
	if quiet || err == nil {
		t.Fatalf("a read-only file's mapping: quiet %v, %v", quiet, err)
	}
	if q.uffd != nil {
		t.Fatal("the userfaultfd stays open after the mapping was refused")
	}
	if _, flags := smapsOf(t, ro); slices.Contains(flags, "uw") {
		t.Fatalf("the refused mapping has flags %v", flags)
	}
	if quiet, err := q.begin(uintptr(unsafe.Pointer(&w[0]))); quiet || err != nil {
		t.Fatalf("asked again after a refusal: quiet %v, %v", quiet, err)
	}
	q.populate(w, uint64(os.Getpagesize()), []uint64{1}) // not quiet: nothing
	if rss, _ := smapsOf(t, w); rss != 0 {
		t.Fatalf("populate mapped %d bytes of a mapping not registered", rss)
	}
}

// A page cache that holds the file in large folios (read ahead, as cat or
// cp read it) had a fault map a whole 2 MB folio where the mapping is
// aligned for it; quiet, a fault maps its page alone.
func TestQuietMappingMapsOnePageOfALargeFolio(t *testing.T) {
	const size, huge = 32 << 20, 2 << 20
	path := filepath.Join(t.TempDir(), "big")
	page := make([]byte, os.Getpagesize())
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range size / len(page) {
		page[0] = byte(i)
		if _, err := f.Write(page); err != nil {
			t.Fatal(err)
		}
	}
	// out of the page cache, then read back ahead in large blocks
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skip(err)
	}
	if _, err := io.CopyBuffer(io.Discard, io.NewSectionReader(f, 0, size), make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// a mapping aligned to 2 MB, where a folio of that size can be mapped whole
	reserve, err := unix.Mmap(-1, 0, size+huge, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(reserve)
	base := uintptr(unsafe.Pointer(&reserve[0]))
	off := (base+huge-1)&^(huge-1) - base
	m := reserve[off : off+size]
	if _, err := unix.MmapPtr(int(f.Fd()), 0, unsafe.Pointer(&m[0]), size, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		t.Fatal(err)
	}
	at := uintptr(unsafe.Pointer(&m[0]))
	// halfway: read ahead the furthest by then, in the largest folios
	mid := size / 2 / len(page)
	if got := touch(m, mid); got != byte(mid) {
		t.Fatalf("page %d reads %d", mid, got)
	}
	if rss, _ := smapsAt(t, at); rss < huge {
		t.Skipf("one fault mapped %d bytes of a file read ahead: no large folio mapped whole here", rss)
	}
	if err := unix.Madvise(m, unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	var q quietFaults
	quiet, err := q.begin(at)
	if !quiet {
		mustQuiet(t, err)
	}
	defer q.end()
	if got := touch(m, mid); got != byte(mid) {
		t.Fatalf("page %d reads %d", mid, got)
	}
	if rss, _ := smapsAt(t, at); rss != int64(len(page)) {
		t.Fatalf("quiet, one fault in a large folio mapped %d bytes", rss)
	}
}

// TestTouchPagesSurvivesAFileCutShort: the goroutine that reads ahead of a
// night's commit reads a mapped file; one cut short under the mapping
// (SIGBUS past its end) ends the reading, not the process, and the pages
// past the mapping are not read at all.
func TestTouchPagesSurvivesAFileCutShort(t *testing.T) {
	ps := uint64(os.Getpagesize())
	path := filepath.Join(t.TempDir(), "touch")
	m := mapFileAt(t, path, 8)
	touchPages(m, ps, []uint64{0, 3, 7, 8, 1 << 40})() // all there; 8 and past: skipped
	if err := os.Truncate(path, int64(2*ps)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		touchPages(m, ps, []uint64{1, 5, 0})() // page 5 is past the file's end now
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("touching a page past the file's end did not return")
	}
}
