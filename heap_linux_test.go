package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"optsync/fixtures/testkit"
)

// TestHeapHelper is not a test: TestHeapOnHugePages starts the test binary
// again with it, so that the heap is advised in a process whose heap has
// not grown yet, as main does.
func TestHeapHelper(t *testing.T) {
	mode := os.Getenv("OPTSYNC_HEAP_HELPER")
	if mode == "" {
		t.Skip("helper process only")
	}
	switch mode {
	case "advise":
		if _, err := heapOnHugePages(64 << 20); err != nil {
			fmt.Println("error", err)
		}
	case "limited":
		limit := unix.Rlimit{Cur: 2 << 30, Max: 2 << 30}
		if err := unix.Setrlimit(unix.RLIMIT_DATA, &limit); err != nil {
			fmt.Println("error", err)
			return
		}
		n, err := heapOnHugePages(hugeHeap)
		fmt.Println("advised", n, err)
		return
	}
	// A run's heap after the start: 32 MB, each page written.
	b := make([]byte, 32<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	m, err := testkit.MappedIn(at, at+uintptr(len(b)))
	if err != nil {
		fmt.Println("error", err)
	}
	fmt.Println("huge", m.AnonHuge>>10, "advised", m.Has("hg"))
}

// TestHeapOnHugePages checks that a process that advised its heap first
// maps the heap it uses later in 2 MB pages, and one that did not, in 4 KB
// pages (the control: without it a machine whose every mapping is huge
// would pass).
func TestHeapOnHugePages(t *testing.T) {
	if ok, mode := testkit.HugePagesAdvised(); !ok {
		t.Skipf("transparent huge pages are not \"madvise\" here (%s): the advice is not asked for", mode)
	}
	helper := func(mode string) (int, bool) {
		t.Helper()
		out := runHeapHelper(t, mode)
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "error ") {
				t.Fatalf("helper %s: %s", mode, line)
			}
			var huge int
			var advised bool
			if n, _ := fmt.Sscanf(line, "huge %d advised %t", &huge, &advised); n == 2 {
				return huge, advised
			}
		}
		t.Fatalf("helper %s said nothing of its heap:\n%s", mode, out)
		return 0, false
	}
	huge, advised := helper("control")
	if huge != 0 || advised {
		t.Fatalf("without the advice the heap has %d KB of huge pages (advised %v): the control would show nothing", huge, advised)
	}
	huge, advised = helper("advise")
	if !advised {
		t.Errorf("the advised heap's mappings have no hg flag")
	}
	// 32 MB written: at least one whole 2 MB page, even if the kernel found
	// no free huge page for the others.
	if huge < 2048 {
		t.Errorf("advised heap has %d KB of huge pages, want at least 2048", huge)
	}
	t.Logf("32 MB written after the advice: %d KB on huge pages", huge)
}

func TestThpDisabled(t *testing.T) {
	for _, tc := range []struct {
		godebug string
		want    bool
	}{
		{"", false},
		{"disablethp=1", true},
		{"madvdontneed=1,disablethp=1", true},
		{"disablethp=1,disablethp=0", false},
		{"disablethp=0", false},
		{"xdisablethp=1", false},
	} {
		if got := thpDisabled(tc.godebug); got != tc.want {
			t.Errorf("thpDisabled(%q) = %v, want %v", tc.godebug, got, tc.want)
		}
	}
}

func TestHeapAdvised(t *testing.T) {
	const madvise, always, never = "always [madvise] never\n", "[always] madvise never\n", "always madvise [never]\n"
	for _, tc := range []struct {
		thp, overcommit, godebug string
		intSize                  int
		want                     bool
	}{
		{madvise, "0\n", "", 64, true},
		{madvise, "1\n", "madvdontneed=1", 64, true},
		{always, "0\n", "", 64, false},  // the heap has huge pages already
		{never, "0\n", "", 64, false},   // advice changes nothing
		{madvise, "2\n", "", 64, false}, // a fixed commit limit
		{madvise, "0\n", "disablethp=1", 64, false},
		{madvise, "0\n", "", 32, false},
	} {
		if got := heapAdvised(tc.thp, tc.overcommit, tc.godebug, tc.intSize); got != tc.want {
			t.Errorf("heapAdvised(%q, %q, %q, %d) = %v, want %v", tc.thp, tc.overcommit, tc.godebug, tc.intSize, got, tc.want)
		}
	}
}

// TestHeapNotAdvisedUnderALimit starts the test binary again under a limit
// on its writable mappings (ulimit -d) of 2 GB, less than four times the
// 1 GB main would grow the heap by: it asks for nothing, and lives.
func TestHeapNotAdvisedUnderALimit(t *testing.T) {
	if ok, mode := testkit.HugePagesAdvised(); !ok {
		t.Skipf("transparent huge pages are not \"madvise\" here (%s): the advice is not asked for", mode)
	}
	if out := runHeapHelper(t, "limited"); !strings.Contains(out, "advised 0 <nil>") {
		t.Fatalf("under a 2 GB limit on its data, the helper said:\n%s", out)
	}
}

// runHeapHelper starts the test binary again as TestHeapHelper in mode,
// without GODEBUG (disablethp would turn the advice off), and returns what
// it printed; a helper that fails fails the test.
func runHeapHelper(t *testing.T, mode string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHeapHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "OPTSYNC_HEAP_HELPER="+mode, "GODEBUG=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", mode, err, out)
	}
	return string(out)
}
