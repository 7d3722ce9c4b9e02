package state

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A fault on the state file's mapping maps the pages around it that the
// page cache holds as well (fault-around: up to 16, 64 KB), and a night's
// commit faults in leaves scattered over the file: in a file a few nights
// old (each night moves the leaves it rewrites to the lowest free pages)
// the neighbours are leaves no transaction of the night writes. They cost
// nothing to map but count in the resident set, 60 KB a fault, so a
// night's transactions were kept to scatteredChunk contacts (40 – 55 MB
// mapped each) and released the mapping after each: a 1 M night made 27
// transactions, each paying bbolt's two fdatasyncs and the commit record's
// one (56 + 27 syncs, 0.21 s of a 1.1 s night on this machine's disk).
//
// The kernel does not fault around in a mapping registered with a
// userfaultfd for write-protect tracking (mm/memory.c,
// should_fault_around), and since Linux 6.7 a userfaultfd that asks for
// asynchronous write protection (UFFD_FEATURE_WP_ASYNC) may register any
// mapping, a file's too: its write faults, had the mapping any (bbolt's is
// read-only), the kernel resolves itself, with no thread to answer them.
// Nothing is write-protected, so nothing else changes: a read fault maps
// the page it needs, from the same page cache. A night's commit registers
// the mapping so (quiet) and takes quietChunk contacts a transaction:
// 3,000 random touches of a 1 M state mapped 13 MB instead of 140 – 220
// MB, each fault as fast (12 – 13 µs here).
//
// The userfaultfd is opened for user-mode faults only
// (UFFD_USER_MODE_ONLY), which needs no privilege; a system that refuses
// it (an older kernel, a seccomp filter, a kernel without userfaultfd)
// keeps fault-around and the smaller transactions. Closing the userfaultfd
// unregisters the mapping. bbolt maps the file again when it outgrows the
// mapping; the next transaction registers the new one (follow).

// userfaultfd's ABI (linux/userfaultfd.h), which x/sys/unix does not carry.
const (
	uffdAPI             = 0xAA
	uffdUserModeOnly    = 1
	uffdFeatureWPAsync  = 1 << 15
	uffdRegisterModeWP  = 1 << 1
	uffdioAPIIoctl      = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegisterIoctl = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
)

type uffdioAPI struct{ api, features, ioctls uint64 }

type uffdioRegister struct{ start, len, mode, ioctls uint64 }

// quietFaults keeps fault-around off in the mapping registered with its
// userfaultfd, while it is open.
type quietFaults struct {
	mu    sync.Mutex
	uffd  *os.File // nil: not quiet
	start uintptr  // the mapping registered (0: none)
	// refused: the system refused once; the process does not ask again.
	refused bool
	// pidfd names the process to process_madvise (populate); noPopulate:
	// the system refused it once.
	pidfd      *os.File
	noPopulate bool
	iov        []unix.Iovec
}

// begin opens the userfaultfd and registers the mapping at start; false
// when the system refuses either (err says why).
func (q *quietFaults) begin(start uintptr) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.refused || start == 0 {
		return false, nil
	}
	if q.uffd == nil {
		fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly), 0, 0)
		if errno != 0 {
			q.refused = true
			return false, fmt.Errorf("userfaultfd: %w", errno)
		}
		f := os.NewFile(fd, "userfaultfd")
		api := uffdioAPI{api: uffdAPI, features: uffdFeatureWPAsync}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPIIoctl, uintptr(unsafe.Pointer(&api))); errno != 0 {
			f.Close()
			q.refused = true
			return false, fmt.Errorf("userfaultfd with asynchronous write protection: %w", errno)
		}
		q.uffd = f
	}
	if err := q.register(start); err != nil {
		q.closeLocked()
		q.refused = true
		return false, err
	}
	return true, nil
}

// follow registers the mapping at start when it is not the one registered
// (bbolt mapped the file again); a no-op when not quiet.
func (q *quietFaults) follow(start uintptr) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.uffd == nil || start == 0 || start == q.start {
		return nil
	}
	return q.register(start)
}

func (q *quietFaults) register(start uintptr) error {
	length, err := mappingLength(start)
	if err != nil {
		return err
	}
	reg := uffdioRegister{start: uint64(start), len: uint64(length), mode: uffdRegisterModeWP}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, q.uffd.Fd(), uffdioRegisterIoctl, uintptr(unsafe.Pointer(&reg))); errno != 0 {
		return fmt.Errorf("registering the state file's mapping with userfaultfd: %w", errno)
	}
	// A page cache that holds the file in large folios (read ahead by
	// cat, cp, a backup agent) had each fault map a whole 2 MB folio, by
	// its page middle directory entry, fault-around or not: a 1 M night
	// after `cat` of the file peaked at 191 – 197 MB. Without huge
	// mappings a fault maps its page alone (finish_fault maps one page of
	// a file's folio): 3,000 touches mapped 13 MB, not 277 MB. Advice
	// only; it stays with the mapping, whose later faults are the run's
	// last few.
	_ = unix.Madvise(mappedAt(start, length), unix.MADV_NOHUGEPAGE)
	q.start = start
	return nil
}

// end unregisters the mapping (closing the userfaultfd does).
func (q *quietFaults) end() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closeLocked()
}

func (q *quietFaults) closeLocked() {
	if q.uffd != nil {
		q.uffd.Close()
	}
	if q.pidfd != nil {
		q.pidfd.Close()
	}
	q.uffd, q.start, q.pidfd = nil, 0, nil
}

// populate maps in the pages ids (of ps bytes) of the mapping data (the
// file's bytes of the mapping registered) in a call or two: a night's
// transaction knows the leaves its records were found on (Batch.pages). On
// this kind of machine (a paravirtual guest with shadow page tables) a
// read fault on the mapping took 12 – 13 µs; 3,000 pages mapped in by one
// process_madvise(MADV_POPULATE_READ) took 0.7 µs each, and reading each
// once after 5.5 µs (the host's shadow entry, made on the first access),
// so each page the transaction then reads costs half. Advice only: pages
// it maps that the transaction does not read cost their 4 KB of resident
// set until the release at its end, and a system that refuses it (before
// Linux 6.13 process_madvise takes no such advice) is not asked again.
func (q *quietFaults) populate(data []byte, ps uint64, ids []uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.uffd == nil || q.noPopulate || len(data) == 0 || uintptr(unsafe.Pointer(&data[0])) != q.start || len(ids) == 0 {
		return
	}
	if q.pidfd == nil {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			q.noPopulate = true
			return
		}
		q.pidfd = os.NewFile(uintptr(fd), "pidfd")
	}
	slices.Sort(ids)
	q.iov = q.iov[:0]
	end := uint64(0) // the end of the last range, in pages
	for _, id := range ids {
		if id < end || (id+1)*ps > uint64(len(data)) {
			continue
		}
		if n := len(q.iov); n > 0 && id == end {
			q.iov[n-1].SetLen(int(q.iov[n-1].Len) + int(ps))
		} else {
			v := unix.Iovec{Base: &data[id*ps]}
			v.SetLen(int(ps)) // Len is 32 bits wide on 32-bit platforms
			q.iov = append(q.iov, v)
		}
		end = id + 1
	}
	for iov := q.iov; len(iov) > 0; {
		n := min(len(iov), uioMaxIOV)
		if _, _, errno := unix.Syscall6(unix.SYS_PROCESS_MADVISE, q.pidfd.Fd(), uintptr(unsafe.Pointer(&iov[0])), uintptr(n), unix.MADV_POPULATE_READ, 0, 0); errno != 0 {
			if errno == unix.EINVAL || errno == unix.ENOSYS || errno == unix.EPERM {
				q.noPopulate = true
			}
			return
		}
		iov = iov[n:]
	}
}

// populating says whether populate maps pages in: the mapping is quiet
// and the system has not refused the advice.
func (q *quietFaults) populating() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.uffd != nil && !q.noPopulate
}

// uioMaxIOV is the most ranges one process_madvise takes (UIO_MAXIOV).
const uioMaxIOV = 1024

// mappingLength is the length of the mapping that starts at start, as
// /proc/self/maps lists it: a userfaultfd registers whole pages of
// mappings, and bbolt does not say how much it mapped beyond the file.
func mappingLength(start uintptr) (uintptr, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return mappingIn(f, start)
}

// mappingIn finds the mapping that starts at start in a maps listing.
func mappingIn(f io.Reader, start uintptr) (uintptr, error) {
	want := fmt.Appendf(nil, "%08x-", start) // as the kernel prints it
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), want)
		if !ok {
			continue
		}
		end, _, _ := bytes.Cut(rest, []byte(" "))
		e, err := strconv.ParseUint(string(end), 16, 64)
		if err != nil || uintptr(e) <= start {
			return 0, fmt.Errorf("/proc/self/maps: a mapping at %x that ends at %q", start, end)
		}
		return uintptr(e) - start, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("/proc/self/maps: %w", err)
	}
	return 0, fmt.Errorf("/proc/self/maps lists no mapping at %x", start)
}
