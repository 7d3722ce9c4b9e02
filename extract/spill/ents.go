package spill

import (
	"math"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runEnts are the entries a run's sort orders (order), held outside Go's
// heap when large: a run is written from the records where they lie, in
// the entries' order, so the entries live while it is written. On the
// heap, two sorts of a read spilling at once held both sets through the
// writing, and each set stayed until a collection found it (a higher
// peak than moving the records into order first, whose entries died
// before the writing). Mapped, the entries become the records' places (a
// quarter of their size) once sorted, the rest is given back to the
// system at once, and the whole at the run's end.
type runEnts struct {
	ents []ent
	mem  []byte // the mapping ents lies in; nil: on the heap
}

// maxRun is the most records a run holds: their places are 32 bits.
const maxRun = math.MaxInt32

// mapEntsFrom is the smallest size of entries worth a mapping of their own.
const mapEntsFrom = 1 << 20

func newRunEnts(n int) *runEnts {
	size := n * int(unsafe.Sizeof(ent{}))
	if size >= mapEntsFrom {
		mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err == nil {
			hugePages(mem)
			return &runEnts{ents: unsafe.Slice((*ent)(unsafe.Pointer(unsafe.SliceData(mem))), n), mem: mem}
		}
		// no mapping to be had: the heap will do
	}
	return &runEnts{ents: make([]ent, n)}
}

// places turns the sorted entries into the places alone, in the first
// quarter of the same memory (places[k] is ents[k].at), and gives the rest
// back to the system. The entries are not to be used after.
func (r *runEnts) places() []int32 {
	n := len(r.ents) // at most maxRun
	places := unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(r.ents))), n)
	for k := range n {
		// places[k] lies in ents[k/4]: read already
		at := r.ents[k].at
		places[k] = int32(at)
	}
	if r.mem != nil {
		page := os.Getpagesize()
		if keep := (4*n + page - 1) / page * page; keep < len(r.mem) {
			_ = unix.Madvise(r.mem[keep:], unix.MADV_DONTNEED)
		}
	}
	r.ents = nil
	return places
}

// free gives back the mapping, if any: the places are not to be used
// after.
func (r *runEnts) free() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
	}
	r.ents, r.mem = nil, nil
}
