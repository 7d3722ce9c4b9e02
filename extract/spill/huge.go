package spill

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page (x86-64, arm64 with 4
// KiB pages); hugeFrom the smallest array worth asking them for.
const (
	hugePage = 2 << 20
	hugeFrom = 8 << 20
)

// AdviseHuge asks the kernel to back a large array (of records, of a
// table's keys) with huge pages, where the system gives them only when asked (THP "madvise", as
// on this project's machines; Go's heap does not ask). A sort reads and
// writes its records at random places: with 4 KiB pages each of those
// was a TLB miss as well as a cache miss, and a miss of the TLB under a
// virtual machine walks two page tables. Asked before the array is first
// written, its pages come huge; asking is advice, and its failure (a
// kernel without THP) changes nothing but the speed. Only whole huge pages
// inside the array are asked for: an array smaller than hugeFrom is left
// as it is.
func AdviseHuge[T any](items []T) {
	size := uintptr(cap(items)) * unsafe.Sizeof(*new(T))
	if size < hugeFrom {
		return
	}
	base := unsafe.Pointer(unsafe.SliceData(items[:1]))
	start := uintptr(base)
	lo := (start + hugePage - 1) &^ (hugePage - 1)
	hi := (start + size) &^ (hugePage - 1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(base, lo-start)), hi-lo), unix.MADV_HUGEPAGE)
}
