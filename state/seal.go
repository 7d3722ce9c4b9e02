package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Every value the state file holds (schema 4 on) ends with a seal: a
// marker byte and the CRC32C of the key and the value before it, so that a
// flipped bit in either is found and named when the record is read, never
// used. Keys are covered too: a key whose bit flipped is a different key,
// whose seal then does not match.
const (
	sealMarker = 0xC3
	sealSize   = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sealSum(k, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, payload)
}

// seal appends the seal of k and payload to payload (which it may grow in
// place: pass a slice the caller owns).
func seal(k, payload []byte) []byte {
	sum := sealSum(k, payload)
	return binary.LittleEndian.AppendUint32(append(payload, sealMarker), sum)
}

// appendSeal seals dst[start:], the value just appended, under k.
func appendSeal(dst []byte, start int, k []byte) []byte {
	sum := sealSum(k, dst[start:])
	return binary.LittleEndian.AppendUint32(append(dst, sealMarker), sum)
}

// sealed is seal on a copy, for a payload the caller keeps using.
func sealed(k, payload []byte) []byte {
	return seal(k, append(make([]byte, 0, len(payload)+sealSize), payload...))
}

// SealError names a record whose seal does not match.
type SealError struct {
	Bucket string
	Key    []byte
	Why    string
}

func (e *SealError) Error() string {
	return fmt.Sprintf("record %q in %s %s", printable(e.Key), e.Bucket, e.Why)
}

// unseal returns the value without its seal, or a *SealError.
func unseal(bucket string, k, v []byte) ([]byte, error) {
	if len(v) < sealSize || v[len(v)-sealSize] != sealMarker {
		return nil, &SealError{Bucket: bucket, Key: k, Why: "has no checksum"}
	}
	payload := v[:len(v)-sealSize]
	if binary.LittleEndian.Uint32(v[len(v)-4:]) != sealSum(k, payload) {
		return nil, &SealError{Bucket: bucket, Key: k, Why: "does not match its checksum (CRC32C over key and value): a bit of it changed"}
	}
	return payload, nil
}

// printable shows a key as text when it is text, else in hex.
func printable(k []byte) string {
	for _, c := range k {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", k)
		}
	}
	return string(k)
}

// sealSchema is the first schema whose values are all sealed.
const sealSchema = 5

// damage carries a seal that does not match, or a damaged page, out of a
// bbolt callback or cursor loop to the package's boundary (view, update,
// Reader), which turns it into a *CorruptError — the way bbolt's own checks
// of a damaged page leave a transaction. It never leaves the package: a
// loop cannot forget to check it and carry on with what it had read.
type damage struct{ problem string }

// vbucket reads and writes a bucket's values through their seals (or, in a
// file from before them, as they are: sealed false), checking the pages it
// reaches first (pages.go).
type vbucket struct {
	b      *bolt.Bucket
	name   string
	sealed bool
	pv     *pageView
	root   uint64
}

func (s *Store) vb(b *bolt.Bucket, name string) vbucket {
	x := vbucket{b: b, name: name, sealed: s.sealed}
	if b != nil {
		if x.pv = s.pages(b.Tx()); x.pv != nil {
			x.root = uint64(b.Root())
		}
	}
	return x
}

// open returns a value without its seal; a nil value (none, or a nested
// bucket's entry) stays nil.
func (x vbucket) open(k, v []byte) []byte {
	if v == nil || !x.sealed {
		return v
	}
	p, err := unseal(x.name, k, v)
	if err != nil {
		panic(damage{err.Error()})
	}
	return p
}

// Get is the value of k (nil: none).
func (x vbucket) Get(k []byte) []byte {
	x.pv.key(x.root, k, false, x.name)
	return x.open(k, x.b.Get(k))
}

// Put stores v under k, sealed. v is copied.
func (x vbucket) Put(k, v []byte) error {
	if !x.sealed {
		return fmt.Errorf("state: writing %s into a file from before records were sealed", x.name)
	}
	x.pv.key(x.root, k, false, x.name)
	return x.b.Put(k, sealed(k, v))
}

// PutSealed stores a value sealed already (with seal), which must stay
// valid for the transaction.
func (x vbucket) PutSealed(k, v []byte) error { return x.putSealedIn(leafRange{}, k, v) }

// putSealedIn is PutSealed beside a cursor of x that checked leaf (its
// range, in this view): bbolt changes no branch before it commits (see
// vcursor.leaf), so a key of that range descends through the pages already
// checked on the way down to it, and they are not walked again; any other
// key is checked as PutSealed does.
func (x vbucket) putSealedIn(leaf leafRange, k, v []byte) error {
	if !leaf.holds(k) {
		x.pv.key(x.root, k, false, x.name)
	}
	return x.b.Put(k, v)
}

// Delete removes k; bbolt may merge the pages beside it, which are checked
// first too.
func (x vbucket) Delete(k []byte) error {
	x.pv.key(x.root, k, true, x.name)
	return x.b.Delete(k)
}

// ForEach calls fn with every key and its value (nil for a nested bucket).
func (x vbucket) ForEach(fn func(k, v []byte) error) error {
	x.pv.span(x.root, nil, nil, x.name)
	return x.b.ForEach(func(k, v []byte) error { return fn(k, x.open(k, v)) })
}

// Cursor walks the bucket with values opened, checking the pages between
// each key it returns and the one before (or, after Covering, none within
// the range covered).
func (x vbucket) Cursor() *vcursor { return &vcursor{c: x.b.Cursor(), x: x} }

type vcursor struct {
	c *bolt.Cursor
	x vbucket
	// last is the key returned before (nil: none yet); from, to and
	// covered say which range was checked whole beforehand.
	last     []byte
	from, to []byte
	covered  bool
	// leaf is the range of the checked leaf last holds. In a write
	// transaction too: bbolt changes only leaves until it commits (a put or
	// a delete changes the leaf node the key falls in; rebalance and spill,
	// which change branches, run inside Commit), so the branches route every
	// key of a checked leaf's range to that leaf, page or node, and a step
	// between two keys of the range passes no other page. A night's writes
	// (packed.apply: a seek, a step back to the floor block and one on to
	// the next) walked down from the root at each step.
	leaf leafRange
}

// Covering checks every page of [from, to] (nil: open-ended) at once, for a
// scan of that range.
func (c *vcursor) Covering(from, to []byte) *vcursor {
	c.x.pv.span(c.x.root, from, to, c.x.name)
	c.from, c.to, c.covered = from, to, true
	return c
}

func (c *vcursor) within(k []byte) bool {
	return c.covered && (c.from == nil || bytes.Compare(k, c.from) >= 0) && (c.to == nil || bytes.Compare(k, c.to) <= 0)
}

// at checks the pages between the key returned before and k (every page a
// step of bbolt's cursor may have passed), then opens k's value.
func (c *vcursor) at(k, v []byte) ([]byte, []byte) {
	if k == nil {
		c.last = nil
		return nil, nil
	}
	// A step between two keys of one leaf checked passes no other page:
	// lookups in id order (a night's) step within a leaf or seek, and
	// need no walk down from the root for each step.
	if c.x.pv != nil && !(c.within(k) && (c.last == nil || c.within(c.last))) &&
		!(c.last != nil && c.leaf.holds(c.last) && c.leaf.holds(k)) {
		lo, hi := c.last, k
		if lo != nil && bytes.Compare(lo, hi) > 0 {
			lo, hi = hi, lo
		}
		c.leaf = c.x.pv.spanTo(c.x.root, lo, hi, k, c.x.name)
	}
	c.last = append(c.last[:0], k...)
	return k, c.x.open(k, v)
}

// inLeaf says k lies in the leaf the cursor stands on, as checked: a
// step forward to it stays on that page.
func (c *vcursor) inLeaf(k []byte) bool { return c.leaf.holds(k) }

func (c *vcursor) First() ([]byte, []byte) {
	c.last, c.leaf = nil, leafRange{}
	return c.at(c.c.First())
}

// Last checks the pages down to the bucket's last key only: a history
// read newest first starts there, and a walk of every page of the bucket
// grew with the history.
func (c *vcursor) Last() ([]byte, []byte) {
	c.leaf = c.x.pv.last(c.x.root, c.x.name)
	k, v := c.c.Last()
	if k == nil {
		c.last = nil
		return nil, nil
	}
	if !c.leaf.holds(k) {
		// a leaf that does not hold bbolt's last key: check what lies
		// between it and the end
		c.x.pv.span(c.x.root, k, nil, c.x.name)
	}
	c.last = append(c.last[:0], k...)
	return k, c.x.open(k, v)
}
func (c *vcursor) Next() ([]byte, []byte) { return c.at(c.c.Next()) }
func (c *vcursor) Prev() ([]byte, []byte) { return c.at(c.c.Prev()) }
func (c *vcursor) Seek(k []byte) ([]byte, []byte) {
	c.leaf = c.x.pv.key(c.x.root, k, false, c.x.name)
	c.last = append(c.last[:0], k...)
	fk, fv := c.c.Seek(k)
	if fk == nil {
		// Past the last key, bbolt's cursor stands at k's place on the
		// last leaf (checked above): a step back from there passes the
		// pages between k and the key before it. Forgetting k would make
		// that step check every page from the bucket's first — a packed
		// bucket appended to at its end walked all of it per write.
		return nil, nil
	}
	return c.at(fk, fv)
}

// errUnsealed says a file from before the seals was opened to be written:
// open seals it whole first (migrate).
var errUnsealed = errors.New("state values are not sealed yet")

// readSchema reads the schema record: sealed (schema 5 on: every value of
// the file is), or, in a file from before, the bare number (1 to 4). A
// sealed record whose bit flipped is neither.
func readSchema(v []byte) (n int, sealed bool, err error) {
	if v == nil {
		return 0, true, nil // not written yet: a new file
	}
	if p, err := unseal("meta", keySchema, v); err == nil {
		if n, err := strconv.Atoi(string(p)); err == nil && n >= sealSchema {
			return n, true, nil
		}
		return 0, false, fmt.Errorf("its schema record %q is not a schema", printable(p))
	}
	if n, err := strconv.Atoi(string(v)); err == nil && n >= 1 && n < sealSchema {
		return n, false, nil
	}
	return 0, false, errors.New("its schema record does not match its checksum (CRC32C over key and value): a bit of it changed")
}
