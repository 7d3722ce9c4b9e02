package spill

import (
	"bufio"
	"encoding/binary"
	"os"
	"unsafe"
)

// runBatch is how many records a run's writer reads ahead at once.
const runBatch = 16

// writeRun writes the records held to f in the order ents gives (order),
// each as its length and Append's encoding, and returns the bytes written.
//
// The records are not moved into order first: moving them read each at
// random and wrote it back, and the encoding then read at random what each
// points to (a profile's PKey in key blocks filled in the order read), a
// cache and TLB miss each, one after the other: most of a spilling read.
// Read in order here, a batch's records are asked for at once, a batch
// ahead of their encoding, and what they point to (Touch) once they have
// come, so that the misses overlap.
func (s *Sorter[T]) writeRun(f *os.File, ents []ent) (int64, error) {
	w := bufio.NewWriterSize(f, 1<<20)
	items, touch := s.items, s.codec.Touch
	var n int64
	var sink uint64
	if len(ents) > 0 {
		sink += touchRecords(items, ents[:min(runBatch, len(ents))])
	}
	for b := 0; b < len(ents); b += runBatch {
		batch := ents[b:min(b+runBatch, len(ents))]
		if next := ents[min(b+runBatch, len(ents)):min(b+2*runBatch, len(ents))]; len(next) > 0 {
			sink += touchRecords(items, next)
		}
		if touch != nil {
			for _, e := range batch {
				sink += touch(&items[e.at])
			}
		}
		for _, e := range batch {
			s.buf = s.codec.Append(s.buf[:0], &items[e.at])
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

// touchRecords reads the first and the last byte of each record ents
// names (a record may straddle two cache lines) and returns their sum.
func touchRecords[T any](items []T, ents []ent) uint64 {
	var sum uint64
	last := unsafe.Sizeof(*new(T))
	if last == 0 {
		return 0
	}
	last--
	for _, e := range ents {
		p := unsafe.Pointer(&items[e.at])
		sum += uint64(*(*byte)(p)) + uint64(*(*byte)(unsafe.Add(p, last)))
	}
	return sum
}
