package spill

import (
	"encoding/binary"
	"os"
	"reflect"
	"sync"
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
func (s *Sorter[T]) writeRun(f *os.File, places []int32, ways int) (int64, error) {
	if ways > 1 && len(places) >= 2*runChunk {
		return s.writeRunShared(f, places)
	}
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
	for len(places) > 0 {
		part := places[:min(runChunk, len(places))]
		places = places[len(part):]
		out = s.encode(out, part)
		if len(out) >= runWrite || len(places) == 0 {
			if _, err := f.Write(out); err != nil {
				return n, err
			}
			n += int64(len(out))
			out = out[:0]
		}
	}
	return n, nil
}

// runChunk is how many records are encoded at once: a chunk of a run
// that two goroutines share, a part of the buffer written.
const runChunk = 8 << 10

// encode appends the records at places, in that order, to out.
func (s *Sorter[T]) encode(out []byte, places []int32) []byte {
	items, touch := s.items, s.codec.Touch
	var sink uint64
	// Three batches in flight: the records of the one after next are
	// asked for, what the next one's records point to (those records
	// asked for a batch ago, come by now), and this one is encoded. What
	// a record points to, asked for just before its encoding, was waited
	// for at once: a miss a batch.
	batchOf := func(b int) []int32 {
		return places[min(b, len(places)):min(b+runBatch, len(places))]
	}
	sink += touchRecords(items, batchOf(0))
	sink += touchRecords(items, batchOf(runBatch))
	if touch != nil {
		for _, at := range batchOf(0) {
			sink += touch(&items[at])
		}
	}
	for b := 0; b < len(places); b += runBatch {
		sink += touchRecords(items, batchOf(b+2*runBatch))
		if touch != nil {
			for _, at := range batchOf(b + runBatch) {
				sink += touch(&items[at])
			}
		}
		for _, at := range batchOf(b) {
			start := len(out)
			out = s.codec.Append(append(out, 0), &items[at])
			out = putLength(out, start)
		}
	}
	s.touched.Add(sink)
	return out
}

// writeRunShared is writeRun with the encoding shared by two goroutines,
// a chunk of records each in turn; this one writes the chunks in order.
func (s *Sorter[T]) writeRunShared(f *os.File, places []int32) (int64, error) {
	const ways = 2
	chunks := (len(places) + runChunk - 1) / runChunk
	type encoder struct {
		done chan []byte // chunks encoded, in the encoder's order
		free chan []byte // buffers written, for its next chunks
	}
	var encs [ways]encoder
	quit := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(quit)
	for w := range encs {
		e := encoder{done: make(chan []byte, 1), free: make(chan []byte, 2)}
		for range 2 {
			var buf []byte
			if k := len(s.shared); k > 0 {
				buf, s.shared = s.shared[k-1], s.shared[:k-1]
			}
			e.free <- buf
		}
		encs[w] = e
		wg.Go(func() {
			for c := w; c < chunks; c += ways {
				var buf []byte
				select {
				case buf = <-e.free:
				case <-quit:
					return
				}
				buf = s.encode(buf[:0], places[c*runChunk:min((c+1)*runChunk, len(places))])
				select {
				case e.done <- buf:
				case <-quit:
					return
				}
			}
		})
	}
	var n int64
	for c := range chunks {
		e := encs[c%ways]
		buf := <-e.done
		if _, err := f.Write(buf); err != nil {
			return n, err
		}
		n += int64(len(buf))
		e.free <- buf
	}
	// every chunk written: the buffers are back, kept for the next run
	for _, e := range encs {
		for range 2 {
			s.shared = append(s.shared, (<-e.free)[:0])
		}
	}
	return n, nil
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

// hasPointers says a value of type t holds a pointer (a string, a slice,
// a map... anywhere in it).
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	default:
		return true
	}
}
