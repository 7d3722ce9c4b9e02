package spill

import "golang.org/x/sys/unix"

// hugePages asks for a mapping of entries to be backed with 2 MB pages:
// the entries are written all over it at once, and in 4 KB pages each
// page's first write is a fault (10 – 15 µs on a virtual machine with
// shadow paging; a 10 M backfill's runs took 117 thousand). It is advice:
// a kernel without transparent huge pages refuses it and nothing changes.
func hugePages(mem []byte) { _ = unix.Madvise(mem, unix.MADV_HUGEPAGE) }
