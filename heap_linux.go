package main

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeHeap is how much of the heap a process asks to have on 2 MB pages:
// the default memory_budget, which a run's heap stays below.
const hugeHeap = 1 << 30

// heapOnHugePages asks the kernel to back the first n bytes of the heap the
// process grows into with 2 MB pages, and returns how many bytes it asked
// for (0: it did not ask, or the kernel refused, err says why).
//
// Where transparent huge pages are "madvise", the kernel's usual default,
// the Go heap is mapped in 4 KB pages: it takes a page fault for each 4 KB
// the first time it is used, and the runtime does not advise otherwise
// (since Go 1.21.1). On a virtual machine with shadow paging a fault costs
// 10 – 15 µs; a night's heap of about 30 MB took 8 – 9 thousand of them, a
// million-contact backfill's 65 thousand. With the advice it faults once
// each 2 MB.
//
// The runtime maps heap as it grows and gives advice no way in, so this
// makes the heap grow: an allocation of n bytes, made first, is n bytes of
// fresh heap, and its own address says where. The advice stays with those
// pages after the collector frees the allocation and FreeOSMemory hands
// them back, untouched, to the kernel (free pages not handed back would
// count against memory_budget's limit until the scavenger got to them).
// Later allocations take the lowest free addresses, that range among
// them, and the first use of each 2 MB then maps a huge page. Memory is
// bounded as before: a page counts once used, and memory_budget's limit
// still applies to the heap. It costs one collection and the runtime's
// bookkeeping for n bytes of heap, a few milliseconds, at the start.
//
// It does nothing when transparent huge pages are "always" (the heap is on
// them already), "never" or missing, or when GODEBUG says disablethp=1
// (the runtime's own switch for keeping its heap off them). Nor where the
// kernel counts every writable mapping against a fixed commit limit
// (vm.overcommit_memory 2), or where a limit on the process's mappings is
// less than 4n bytes: growing the heap by n bytes the process may never
// use could fail. And not on a 32-bit system, whose address space the n
// bytes would crowd.
func heapOnHugePages(n int) (int, error) {
	thp, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return 0, nil
	}
	overcommit, err := os.ReadFile("/proc/sys/vm/overcommit_memory")
	if err != nil || !heapAdvised(string(thp), string(overcommit), os.Getenv("GODEBUG"), strconv.IntSize) {
		return 0, nil
	}
	if room := mappingRoom(); room < 4*uint64(n) {
		return 0, nil
	}
	const huge = 2 << 20
	b := make([]byte, n)
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := (at+huge-1)&^(huge-1) - at
	hi := (at+uintptr(n))&^(huge-1) - at
	advised := 0
	if hi > lo {
		if err = unix.Madvise(b[lo:hi], unix.MADV_HUGEPAGE); err == nil {
			advised = int(hi - lo)
		}
	}
	runtime.KeepAlive(b)
	debug.FreeOSMemory()
	return advised, err
}

// heapAdvised reports whether heapOnHugePages asks, given the contents of
// /sys/kernel/mm/transparent_hugepage/enabled and
// /proc/sys/vm/overcommit_memory, GODEBUG and the size of an int in bits.
func heapAdvised(thp, overcommit, godebug string, intSize int) bool {
	return strings.Contains(thp, "[madvise]") && strings.TrimSpace(overcommit) != "2" &&
		!thpDisabled(godebug) && intSize == 64
}

// mappingRoom is the least of the limits on the process's address space
// and on its writable private mappings (ulimit -v, ulimit -d), which the
// heap's growth counts against: a heap the runtime cannot map is fatal, so
// the advice is asked for only with ample room.
func mappingRoom() uint64 {
	room := uint64(math.MaxUint64)
	for _, which := range []int{unix.RLIMIT_AS, unix.RLIMIT_DATA} {
		var l unix.Rlimit
		if err := unix.Getrlimit(which, &l); err != nil {
			return 0
		}
		if l.Cur != unix.RLIM_INFINITY {
			room = min(room, l.Cur)
		}
	}
	return room
}

// thpDisabled reports whether a GODEBUG value turns disablethp on (the
// last setting of a name wins, as in the runtime).
func thpDisabled(godebug string) bool {
	off := false
	for _, kv := range strings.Split(godebug, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k == "disablethp" {
			off = v == "1"
		}
	}
	return off
}
