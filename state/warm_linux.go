package state

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// canAdvise says the kernel takes advice on a file's pages (warm.go).
const canAdvise = true

// willNeed asks the kernel to read pages [id, id+n) of f into the page
// cache, without waiting for them.
func willNeed(f *os.File, id, n, ps uint64) error {
	return unix.Fadvise(int(f.Fd()), int64(id*ps), int64(n*ps), unix.FADV_WILLNEED)
}

// inCache says whether page id of the file mapped at data is in the page
// cache (mincore: nothing is read). ok is false when the kernel cannot
// tell.
func inCache(data uintptr, id, ps uint64) (in, ok bool) {
	var vec [1]byte
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, data+uintptr(id*ps), uintptr(ps), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return false, false
	}
	return vec[0]&1 != 0, true
}
