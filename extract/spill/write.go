package spill

import (
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
	items, touch := s.items, s.codec.Touch
	// Records are encoded straight into the buffer written, each after
	// a byte kept for its length (one byte below 128, which nearly every
	// record is): through a bufio.Writer, each was encoded into a buffer
	// of its own and copied again, in two calls a record.
	out := s.buf[:0]
	if cap(out) < runWrite {
		out = make([]byte, 0, runWrite+runWrite/8)
	}
	defer func() { s.buf = out[:0] }()
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
			start := len(out)
			out = s.codec.Append(append(out, 0), &items[at])
			out = putLength(out, start)
		}
		if len(out) >= runWrite {
			if _, err := f.Write(out); err != nil {
				return n, err
			}
			n += int64(len(out))
			out = out[:0]
		}
	}
	s.touched += sink
	if _, err := f.Write(out); err != nil {
		return n, err
	}
	return n + int64(len(out)), nil
}

// runWrite is how much of a run is written at once.
const runWrite = 1 << 20

// putLength writes the length of the record that follows out[start] (the
// byte kept for it) as a uvarint there, moving the record up when its
// length takes more than that byte.
func putLength(out []byte, start int) []byte {
	l := len(out) - start - 1
	if l < 0x80 {
		out[start] = byte(l)
		return out
	}
	var hdr [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(hdr[:], uint64(l))
	out = append(out, hdr[:k-1]...) // room
	copy(out[start+k:], out[start+1:start+1+l])
	copy(out[start:], hdr[:k])
	return out
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
