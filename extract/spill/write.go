package spill

import (
	"bufio"
	"encoding/binary"
	"os"
	"unsafe"
)

// runBatch is how many records a run's writer reads ahead at once.
const runBatch = 16

// writeRun writes the records held to f in sorted order (places[k] is the
// k-th record's place: runEnts.places), each as its length and Append's
// encoding, and returns the bytes written.
//
// The records are not moved into order first: moving them read each at
// random and wrote it back, and the encoding then read at random what each
// points to (a profile's PKey in key blocks filled in the order read), a
// cache and TLB miss each, one after the other: most of a spilling read.
// Read in order here, a batch's records are asked for at once, a batch
// ahead of their encoding, and what they point to (Touch) once they have
// come, so that the misses overlap.
func (s *Sorter[T]) writeRun(f *os.File, places []int32) (int64, error) {
	w := bufio.NewWriterSize(f, 1<<20)
	items, touch := s.items, s.codec.Touch
	var n int64
	var sink uint64
	if len(places) > 0 {
		sink += touchRecords(items, places[:min(runBatch, len(places))])
	}
	for b := 0; b < len(places); b += runBatch {
		batch := places[b:min(b+runBatch, len(places))]
		if next := places[min(b+runBatch, len(places)):min(b+2*runBatch, len(places))]; len(next) > 0 {
			sink += touchRecords(items, next)
		}
		if touch != nil {
			for _, at := range batch {
				sink += touch(&items[at])
			}
		}
		for _, at := range batch {
			s.buf = s.codec.Append(s.buf[:0], &items[at])
			k := binary.PutUvarint(s.hdr[:], uint64(len(s.buf)))
			w.Write(s.hdr[:k])
			if _, err := w.Write(s.buf); err != nil {
				return n, err
			}
			n += int64(k + len(s.buf))
		}
	}
	s.touched += sink
	return n, w.Flush()
}

// touchRecords reads the first and the last byte of each record at the
// places given (a record may straddle two cache lines) and returns their
// sum.
func touchRecords[T any](items []T, places []int32) uint64 {
	var sum uint64
	last := unsafe.Sizeof(*new(T))
	if last == 0 {
		return 0
	}
	last--
	for _, at := range places {
		p := unsafe.Pointer(&items[at])
		sum += uint64(*(*byte)(p)) + uint64(*(*byte)(unsafe.Add(p, last)))
	}
	return sum
}
