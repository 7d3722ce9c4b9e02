package extract

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Key names bytes a profile keeps outside its struct (its PKey, its
// fields' change times) in a Keys: a block and a place in it, not a
// pointer. A million profiles are held at once, sorted and copied; with a
// string and a pointer in each, every collection scanned the whole array
// and chased a million pointers, and every copy of it paid write barriers.
// Without pointers the array is never scanned. The zero Key is empty (no
// PKey, no field times).
type Key uint64

// A Key's parts: the block's number (from 1), where in it, how long.
const (
	keyLenBits = 16
	keyOffBits = 16
	keyWhole   = 1<<keyLenBits - 1 // length: the whole block (a long key has one of its own)
)

func makeKey(block, off, n int) Key {
	return Key(uint64(block)<<(keyOffBits+keyLenBits) | uint64(off)<<keyLenBits | uint64(n))
}

func (k Key) block() int { return int(k >> (keyOffBits + keyLenBits)) }
func (k Key) off() int   { return int(k>>keyLenBits) & (1<<keyOffBits - 1) }
func (k Key) n() int     { return int(k) & keyWhole }

// Empty says k names nothing: a row without a PKey, a profile without
// field times.
func (k Key) Empty() bool { return k == 0 }

// Keys holds the bytes Key values name, in blocks: one allocation a block
// rather than one a row. It is a table of blocks that writers (KeyWriter)
// fill and let go of; a block let go of is no longer in the table, and a
// Key naming it is a mistake of the caller's (Get panics), never a wrong
// PKey. A string Get returned stays valid after its block is let go of (a
// block is never written again; the collector keeps it while the string
// lives).
//
// Writers on several goroutines may add blocks while others read: the
// table is a fixed directory of parts that never move, each slot written
// once when its block comes and once when it goes.
type Keys struct {
	mu  sync.Mutex // adding and letting go of blocks
	n   int        // blocks added
	dir atomic.Pointer[[]*[keyPart][]byte]
}

// keyPart is how many blocks a part of the table holds.
const keyPart = 256

// NewKeys makes an empty table.
func NewKeys() *Keys { return &Keys{} }

// keyBlock is a block's size: small beside what a sorter holds, large
// beside a PKey. Bytes past keyBlock/16 get a block of their own.
const keyBlock = 32 << 10

func (ks *Keys) add(b []byte) int {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	i := ks.n
	d := ks.dir.Load()
	if d == nil || i/keyPart == len(*d) {
		// a longer directory, the parts themselves unmoved: a reader
		// holding the old one finds every block it names there. (Made
		// here only: a directory made at every call, stored or not, was
		// an allocation a block.)
		var dir []*[keyPart][]byte
		if d != nil {
			dir = *d
		}
		dir = append(dir[:len(dir):len(dir)], new([keyPart][]byte))
		ks.dir.Store(&dir)
		d = &dir
	}
	(*d)[i/keyPart][i%keyPart] = b
	ks.n++
	return i + 1
}

// drop takes block n out of the table and returns it.
func (ks *Keys) drop(n int) []byte {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	slot := &(*ks.dir.Load())[(n-1)/keyPart][(n-1)%keyPart]
	b := *slot
	*slot = nil
	return b
}

func (ks *Keys) bytes(k Key) []byte {
	b := k.block() - 1
	var blk []byte
	if d := ks.dir.Load(); d != nil && b >= 0 && b/keyPart < len(*d) {
		blk = (*d)[b/keyPart][b%keyPart]
	}
	if blk == nil {
		panic(fmt.Sprintf("extract: key %#x names a block let go of", uint64(k)))
	}
	if k.n() == keyWhole {
		return blk
	}
	return blk[k.off() : k.off()+k.n()]
}

// Get is the string k names ("" for the zero Key), without a copy.
func (ks *Keys) Get(k Key) string {
	if k == 0 {
		return ""
	}
	b := ks.bytes(k)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Len is the length of what k names.
func (ks *Keys) Len(k Key) int {
	if k == 0 {
		return 0
	}
	return len(ks.bytes(k))
}

// Touch reads the first byte of what k names (0 for the zero Key): a
// sorted run's writer asks for the PKeys of a batch of records at once
// (spill.Codec.Touch), where reading each as it is encoded waited for
// memory once a record.
func (ks *Keys) Touch(k Key) uint64 {
	if k == 0 {
		return 0
	}
	b := ks.bytes(k)
	if len(b) == 0 {
		return 0
	}
	return uint64(b[0])
}

// Time is field i's change time in the field times t names (PutTimes),
// NoTime when t is zero.
func (ks *Keys) Time(t Key, i int) int64 {
	if t == 0 {
		return NoTime
	}
	return int64(binary.LittleEndian.Uint64(ks.bytes(t)[8*i:]))
}

// Times copies out the field times t names; false when t is zero.
func (ks *Keys) Times(t Key, dst *[MaxFields]int64) bool {
	if t == 0 {
		return false
	}
	b := ks.bytes(t)
	for i := range dst {
		dst[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return true
}

// KeyWriter adds bytes to a Keys, and lets go of the blocks it filled
// once what they hold is no longer named (Reset, ReleaseBefore). One
// goroutine at a time.
type KeyWriter struct {
	ks   *Keys
	cur  []byte
	curN int // cur's number, 0: none
	// owned are the blocks filled and not let go of, oldest first (cur
	// last, when set); gone counts those let go of before them.
	owned []int
	gone  int
	// spare are blocks let go of by Recycle, for the next ones.
	spare [][]byte
}

// Writer makes a writer of ks.
func (ks *Keys) Writer() *KeyWriter { return &KeyWriter{ks: ks} }

// Keys is the table w adds to.
func (w *KeyWriter) Keys() *Keys { return w.ks }

// Put copies s into w's blocks and names it.
func (w *KeyWriter) Put(s string) Key {
	if len(s) == 0 {
		return 0
	}
	if len(s) > keyBlock/16 {
		n := w.ks.add([]byte(s))
		w.owned = append(w.owned, n)
		if w.curN != 0 {
			// the current block stays the last one owned
			last := len(w.owned) - 1
			w.owned[last-1], w.owned[last] = w.owned[last], w.owned[last-1]
		}
		return makeKey(n, 0, keyWhole)
	}
	if len(w.cur)+len(s) > cap(w.cur) {
		w.newBlock(len(s))
	}
	off := len(w.cur)
	w.cur = append(w.cur, s...)
	return makeKey(w.curN, off, len(s))
}

// PutBytes is Put of b.
func (w *KeyWriter) PutBytes(b []byte) Key {
	return w.Put(unsafe.String(unsafe.SliceData(b), len(b)))
}

// PutTimes copies field times into w's blocks and names them.
func (w *KeyWriter) PutTimes(t *[MaxFields]int64) Key {
	const n = 8 * MaxFields
	pad := -len(w.cur) & 7
	if len(w.cur)+pad+n > cap(w.cur) {
		w.newBlock(n)
		pad = 0
	}
	w.cur = w.cur[:len(w.cur)+pad]
	off := len(w.cur)
	for _, x := range t {
		w.cur = binary.LittleEndian.AppendUint64(w.cur, uint64(x))
	}
	return makeKey(w.curN, off, n)
}

// Copy puts the PKey k names in from into w: a record moving from one
// holder to another takes its bytes along.
func (w *KeyWriter) Copy(from *Keys, k Key) Key {
	if k == 0 {
		return 0
	}
	return w.Put(from.Get(k))
}

// CopyTimes is Copy of field times (PutTimes).
func (w *KeyWriter) CopyTimes(from *Keys, t Key) Key {
	var x [MaxFields]int64
	if !from.Times(t, &x) {
		return 0
	}
	return w.PutTimes(&x)
}

// newBlock starts a block: small for a writer's first (a profile read on
// its own needs a few bytes), twice the last up to keyBlock.
func (w *KeyWriter) newBlock(need int) {
	size := max(min(max(2*cap(w.cur), 256), keyBlock), need)
	if n := len(w.spare); n > 0 && need <= keyBlock {
		size = keyBlock
		w.cur = w.spare[n-1][:0]
		w.spare[n-1] = nil
		w.spare = w.spare[:n-1]
	} else {
		w.cur = make([]byte, 0, size)
	}
	w.curN = w.ks.add(w.cur[:size])
	w.owned = append(w.owned, w.curN)
}

// Mark is a point in what a writer has written (KeyWriter.ReleaseBefore).
type Mark int

// Mark is where w stands: the blocks filled before it, counted from the
// first (the current block holds what comes next, so it is not before).
func (w *KeyWriter) Mark() Mark {
	n := w.gone + len(w.owned)
	if w.curN != 0 {
		n--
	}
	return Mark(n)
}

// ReleaseBefore lets go of the blocks w filled before m: no Key w returned
// before m may be used after.
func (w *KeyWriter) ReleaseBefore(m Mark) {
	k := 0
	for ; k < int(m)-w.gone && k < len(w.owned); k++ {
		if w.owned[k] == w.curN {
			break
		}
		w.ks.drop(w.owned[k])
	}
	w.owned = append(w.owned[:0], w.owned[k:]...)
	w.gone += k
}

// Reset lets go of every block w filled: no Key it returned may be used
// after.
func (w *KeyWriter) Reset() {
	if w == nil {
		return
	}
	for _, n := range w.owned {
		w.ks.drop(n)
	}
	w.gone += len(w.owned)
	w.owned, w.cur, w.curN, w.spare = w.owned[:0], nil, 0, nil
}

// Recycle lets go of every block w filled, as Reset does, and keeps those
// of a block's full size for w's next blocks: what a Key w returned named,
// and any string Get gave of it, is written over. It is for a writer
// whose rows have all gone to disk, and of whose bytes no one keeps a
// string: the read's, when its sort of the profiles spills. Let go of
// to the collector, a spill's worth of blocks was garbage until the next
// collection, and the reading after it took as many blocks anew: memory
// new to the process (a page fault each 4 KB) on top of the garbage.
func (w *KeyWriter) Recycle() {
	for _, n := range w.owned {
		if b := w.ks.drop(n); cap(b) == keyBlock {
			w.spare = append(w.spare, b[:0])
		}
	}
	w.gone += len(w.owned)
	w.owned, w.cur, w.curN = w.owned[:0], nil, 0
}
