package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// A contact's record is keyed by its 16-byte GUID, so one contact's pairs sit
// together and a run that walks contacts in id order reads and writes the
// file front to back. The value:
//
//	version(1) flags(1) varint(DModified ms) varint(CModified ms)
//	varint(Decided s) uvarint(len) DETag uvarint(len) PKey count(1)
//	then per pair: id(1) flags(2) [uvarint(DWrittenAt ms)] [uvarint(CWrittenAt ms)]
//
// flags: bit 0 DSeen, bit 1 CSeen. Pair flags pack S, DRaw, CRaw, DWritten,
// CWritten at two bits each; a pair with a pending write (DWritten or
// CWritten known) carries when the run that wrote it started.
//
// Older layouts are still read. Version 1 (the last released one) held
// varint(DVersion), a row version parsed out of the ETag, where DETag is
// now, and no write times: its row version is dropped, not turned back into
// an ETag it may not have been (such a contact's next write reads it
// first), and its pending writes are read as "run not recorded". Version 2
// (never released, written by builds between) held DETag but no write
// times, read as version 1's are. A record rewritten is written as
// version 3.
const recordVersion = 3

// writeTimesVersion is the first record version whose pair entries carry
// the times of pending writes.
const writeTimesVersion = 3

func (s *Store) encode(dst []byte, snap *transform.Snapshot) []byte {
	var f byte
	if snap.DSeen {
		f |= 1
	}
	if snap.CSeen {
		f |= 2
	}
	dst = append(dst, recordVersion, f)
	dst = binary.AppendVarint(dst, snap.DModified)
	dst = binary.AppendVarint(dst, snap.CModified)
	dst = binary.AppendVarint(dst, snap.Decided)
	dst = binary.AppendUvarint(dst, uint64(len(snap.DETag)))
	dst = append(dst, snap.DETag...)
	dst = binary.AppendUvarint(dst, uint64(len(snap.PKey)))
	dst = append(dst, snap.PKey...)
	dst = append(dst, byte(len(s.pairIDs)))
	for i, id := range s.pairIDs {
		p := snap.Pairs[i]
		f := uint16(p.S) | uint16(p.DRaw)<<2 | uint16(p.CRaw)<<4 | uint16(p.DWritten)<<6 | uint16(p.CWritten)<<8
		dst = append(dst, id, byte(f), byte(f>>8))
		if p.DWritten.Known() {
			dst = binary.AppendUvarint(dst, uint64(max(p.DWrittenAt, 0)))
		}
		if p.CWritten.Known() {
			dst = binary.AppendUvarint(dst, uint64(max(p.CWrittenAt, 0)))
		}
	}
	return dst
}

// record is a stored value split into its header and its pair entries.
type record struct {
	version                      byte
	flags                        byte
	dModified, cModified, decide int64
	etag                         []byte
	pkey                         []byte
	count                        int
	pairs                        []byte // the entries, as stored
}

var errTruncated = errors.New("record truncated")

func parseRecord(v []byte) (record, error) {
	var r record
	if len(v) < 2 || v[0] < 1 || v[0] > recordVersion {
		return r, fmt.Errorf("record version %d unknown", firstByte(v))
	}
	r.version, r.flags = v[0], v[1]
	v = v[2:]
	for _, dst := range []*int64{&r.dModified, &r.cModified, &r.decide} {
		x, n := binary.Varint(v)
		if n <= 0 {
			return r, errTruncated
		}
		*dst, v = x, v[n:]
	}
	bytesField := func() ([]byte, bool) {
		l, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < l {
			return nil, false
		}
		b := v[n : n+int(l)]
		v = v[n+int(l):]
		return b, true
	}
	var ok bool
	if r.version == 1 {
		_, n := binary.Varint(v) // DVersion: dropped
		if n <= 0 {
			return r, errTruncated
		}
		v = v[n:]
	} else if r.etag, ok = bytesField(); !ok {
		return r, errTruncated
	}
	if r.pkey, ok = bytesField(); !ok || len(v) < 1 {
		return r, errTruncated
	}
	r.count = int(v[0])
	r.pairs = v[1:]
	return r, nil
}

// pairEntry is one pair of a stored record, in the current layout.
type pairEntry struct {
	id                     byte
	flags                  uint16
	dWrittenAt, cWrittenAt int64
}

func (e pairEntry) appendTo(dst []byte) []byte {
	dst = append(dst, e.id, byte(e.flags), byte(e.flags>>8))
	if e.flags>>6&3 != 0 {
		dst = binary.AppendUvarint(dst, uint64(e.dWrittenAt))
	}
	if e.flags>>8&3 != 0 {
		dst = binary.AppendUvarint(dst, uint64(e.cWrittenAt))
	}
	return dst
}

// eachPair calls fn for every pair entry of a record, whatever its version.
func (r *record) eachPair(fn func(e pairEntry)) error {
	v := r.pairs
	for range r.count {
		if len(v) < 3 {
			return errTruncated
		}
		e := pairEntry{id: v[0], flags: uint16(v[1]) | uint16(v[2])<<8}
		v = v[3:]
		if r.version >= writeTimesVersion && e.flags>>6&3 != 0 {
			x, n := binary.Uvarint(v)
			if n <= 0 {
				return errTruncated
			}
			e.dWrittenAt, v = int64(x), v[n:]
		}
		if r.version >= writeTimesVersion && e.flags>>8&3 != 0 {
			x, n := binary.Uvarint(v)
			if n <= 0 {
				return errTruncated
			}
			e.cWrittenAt, v = int64(x), v[n:]
		}
		fn(e)
	}
	return nil
}

// appendRecord re-encodes a parsed record, in the current layout, with
// other pair entries.
func appendRecord(dst []byte, r record, pairs []pairEntry) []byte {
	dst = append(dst, recordVersion, r.flags)
	dst = binary.AppendVarint(dst, r.dModified)
	dst = binary.AppendVarint(dst, r.cModified)
	dst = binary.AppendVarint(dst, r.decide)
	dst = binary.AppendUvarint(dst, uint64(len(r.etag)))
	dst = append(dst, r.etag...)
	dst = binary.AppendUvarint(dst, uint64(len(r.pkey)))
	dst = append(dst, r.pkey...)
	dst = append(dst, byte(len(pairs)))
	for _, e := range pairs {
		dst = e.appendTo(dst)
	}
	return dst
}

// decode fills snap from a stored record; pairs that are no longer
// configured are passed over. (It walks the entries itself rather than
// through eachPair: a run decodes every record of the file.)
func (s *Store) decode(v []byte, snap *transform.Snapshot, slot *[256]int8) error {
	r, err := parseRecord(v)
	if err != nil {
		return err
	}
	*snap = transform.Snapshot{Known: true, DSeen: r.flags&1 != 0, CSeen: r.flags&2 != 0,
		DModified: r.dModified, CModified: r.cModified, Decided: r.decide}
	snap.PKey = string(r.pkey)
	if len(r.etag) > 0 {
		snap.DETag = string(r.etag)
	}
	e := r.pairs
	for range r.count {
		if len(e) < 3 {
			return errTruncated
		}
		id, f := e[0], uint16(e[1])|uint16(e[2])<<8
		e = e[3:]
		var dAt, cAt int64
		if r.version >= writeTimesVersion && f>>6&3 != 0 {
			x, n := binary.Uvarint(e)
			if n <= 0 {
				return errTruncated
			}
			dAt, e = int64(x), e[n:]
		}
		if r.version >= writeTimesVersion && f>>8&3 != 0 {
			x, n := binary.Uvarint(e)
			if n <= 0 {
				return errTruncated
			}
			cAt, e = int64(x), e[n:]
		}
		i := slot[id]
		if i < 0 {
			continue
		}
		snap.Pairs[i] = transform.PairState{
			S:          extract.Tri(f & 3),
			DRaw:       extract.Tri(f >> 2 & 3),
			CRaw:       extract.Tri(f >> 4 & 3),
			DWritten:   extract.Tri(f >> 6 & 3),
			CWritten:   extract.Tri(f >> 8 & 3),
			DWrittenAt: dAt,
			CWrittenAt: cAt,
		}
	}
	return nil
}

func firstByte(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}

func (s *Store) slots() *[256]int8 {
	var slot [256]int8
	for i := range slot {
		slot[i] = -1
	}
	for i, id := range s.pairIDs {
		if id != 0 {
			slot[id] = int8(i)
		}
	}
	return &slot
}

// Reader reads snapshots from one consistent view of the file.
type Reader struct {
	s    *Store
	tx   *bolt.Tx
	b    *bolt.Bucket
	c    *bolt.Cursor
	k, v []byte // the cursor's entry; k is nil before the first Get or at the end
	// end says no key at or after endFrom exists.
	end     bool
	endFrom extract.ID
	slot    *[256]int8
	// walking: Until has positioned the cursor; walkedTo is the id it
	// last asked for.
	walking  bool
	walkedTo extract.ID
	other    transform.Snapshot // what Until hands absent
}

// Reader starts a read view; Close it when done.
func (s *Store) Reader() (*Reader, error) {
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", s.path, err)
	}
	r := &Reader{s: s, tx: tx, b: tx.Bucket(bucketContacts), slot: s.slots()}
	if r.b != nil {
		r.c = r.b.Cursor()
	}
	return r, nil
}

// Get fills snap with the contact's snapshot and reports whether there was
// one. Runs ask for contacts in id order, so Get walks a cursor forward a
// step or two where it can and seeks only when it must: a tree descent per
// contact was a fifth of a repeat backfill.
func (r *Reader) Get(id extract.ID, snap *transform.Snapshot) (bool, error) {
	if r.c == nil {
		return false, nil
	}
	// Past the last key: nothing at or after endFrom exists, and ids come
	// in order, so a run over a new or small file seeks once, not per contact.
	if r.end && bytes.Compare(id[:], r.endFrom[:]) >= 0 {
		return false, nil
	}
	r.end = false
	walked := false
	if r.k != nil && bytes.Compare(r.k, id[:]) < 0 {
		for i := 0; i < 4 && r.k != nil && bytes.Compare(r.k, id[:]) < 0; i++ {
			r.k, r.v = r.c.Next()
		}
		// Stepped onto the id, past it, or off the end: the answer is here.
		walked = r.k == nil || bytes.Compare(r.k, id[:]) >= 0
	}
	if !walked && (r.k == nil || !bytes.Equal(r.k, id[:])) {
		r.k, r.v = r.c.Seek(id[:])
	}
	if r.k == nil {
		r.end, r.endFrom = true, id
		return false, nil
	}
	if !bytes.Equal(r.k, id[:]) {
		return false, nil
	}
	v := r.v
	if err := r.s.decode(v, snap, r.slot); err != nil {
		return false, fmt.Errorf("state %s: contact %s: %w", r.s.path, id, err)
	}
	return true, nil
}

// Until walks the stored contacts in key order: it calls absent for every
// contact after the one the previous call asked for and before id (for the
// first call, from the start), then fills snap with id's snapshot and says
// whether there was one. Calls must ask for ids in increasing order; a
// Reader walked this way is not used for Get. absent's snapshot is reused
// between calls.
func (r *Reader) Until(id *extract.ID, snap *transform.Snapshot, absent func(extract.ID, *transform.Snapshot) error) (bool, error) {
	if r.c == nil {
		return false, nil
	}
	if !r.walking {
		r.walking = true
		r.k, r.v = r.c.First()
	} else if r.k != nil && bytes.Equal(r.k, r.walkedTo[:]) {
		r.k, r.v = r.c.Next()
	}
	for r.k != nil && (id == nil || bytes.Compare(r.k, id[:]) < 0) {
		var k extract.ID
		copy(k[:], r.k)
		if err := r.s.decode(r.v, &r.other, r.slot); err != nil {
			return false, fmt.Errorf("state %s: contact %s: %w", r.s.path, k, err)
		}
		if err := absent(k, &r.other); err != nil {
			return false, err
		}
		r.k, r.v = r.c.Next()
	}
	if id == nil || r.k == nil || !bytes.Equal(r.k, id[:]) {
		if id != nil {
			r.walkedTo = *id
		}
		return false, nil
	}
	r.walkedTo = *id
	if err := r.s.decode(r.v, snap, r.slot); err != nil {
		return false, fmt.Errorf("state %s: contact %s: %w", r.s.path, *id, err)
	}
	return true, nil
}

// Close ends the view.
func (r *Reader) Close() error { return r.tx.Rollback() }

// Batch collects snapshot changes and decision-log entries in memory,
// encoded, for one Commit.
type Batch struct {
	s    *Store
	keys []extract.ID
	ends []uint32
	data []byte
	log  []LogEntry
	// logRun names the run and mappings the log entries belong to.
	logRun *logRun
}

// NewBatch starts an empty batch sized for about n contacts.
func (s *Store) NewBatch(n int) *Batch {
	return &Batch{s: s, keys: make([]extract.ID, 0, n), ends: make([]uint32, 0, n), data: make([]byte, 0, n*(24+3*len(s.pairIDs)))}
}

// Put records the contact's new snapshot.
func (b *Batch) Put(id extract.ID, snap *transform.Snapshot) {
	b.keys = append(b.keys, id)
	b.data = b.s.encode(b.data, snap)
	b.ends = append(b.ends, uint32(len(b.data)))
}

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.keys, b.ends, b.data, b.log = b.keys[:0], b.ends[:0], b.data[:0], b.log[:0]
}

// AddLog records a decision in the decision log. Entries of one batch
// belong to one run, whose id and mappings are kept once.
func (b *Batch) AddLog(e LogEntry, runID string, pairs []transform.Pair) {
	if b.logRun == nil || b.logRun.ID != runID {
		b.logRun = &logRun{ID: runID, Pairs: pairs}
	}
	b.log = append(b.log, e)
}

// Len is the number of snapshots in the batch.
func (b *Batch) Len() int { return len(b.keys) }

// Final is what the last transaction of a run records besides snapshots.
type Final struct {
	Run    *Run
	Files  []ProcessedFile // input files now processed
	Config *ConfigRecord   // the mapping, direction and policy the run used
	// PruneBefore drops decision-log entries of runs started before it
	// (zero: keep all).
	PruneBefore time.Time
	// Retry queues contacts whose writes failed; RetryDone takes contacts
	// this run settled off the queue (done first, so a contact can be both).
	Retry     []RetryItem
	RetryDone []extract.ID
	// Forget drops the snapshots of records deleted in their system.
	Forget []extract.ID
	// Meta stores connectors' read positions (delta link, watermark): only
	// with the run's last transaction, once its writes are applied or queued.
	Meta map[string]string
	// ForgetReadPositions drops the stored read positions first: a mapping
	// was added, so every system read through its API is read in full.
	ForgetReadPositions bool
}

// Commit writes the batch (snapshots in key order, then its decision-log
// entries) in one transaction, with fin's records when fin is not nil.
func (s *Store) Commit(ctx context.Context, b *Batch, fin *Final) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	idx := make([]int, len(b.keys))
	for i := range idx {
		idx[i] = i
	}
	// Joins hand contacts over in id order already; appending in key order
	// is what keeps bbolt's pages full and its writes sequential.
	byKey := func(x, y int) int { return b.keys[x].Compare(b.keys[y]) }
	if !slices.IsSortedFunc(idx, byKey) {
		slices.SortStableFunc(idx, byKey)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.persist(tx); err != nil {
			return fmt.Errorf("state %s: %w", s.path, err)
		}
		bk := tx.Bucket(bucketContacts)
		bk.FillPercent = 0.9
		for _, i := range idx {
			from := uint32(0)
			if i > 0 {
				from = b.ends[i-1]
			}
			v := b.data[from:b.ends[i]]
			if len(s.unmapped) > 0 {
				var err error
				if v, err = s.keepUnmapped(bk.Get(b.keys[i][:]), v); err != nil {
					return fmt.Errorf("state %s: contact %s: %w", s.path, b.keys[i], err)
				}
			}
			if err := bk.Put(b.keys[i][:], v); err != nil {
				return fmt.Errorf("state %s: writing contact %s: %w", s.path, b.keys[i], err)
			}
		}
		if err := putLog(tx, b.log, b.logRun); err != nil {
			return fmt.Errorf("state %s: writing the decision log: %w", s.path, err)
		}
		if fin == nil {
			return nil
		}
		return s.finish(tx, fin)
	})
	if err == nil {
		s.persisted()
	}
	return err
}

// keepUnmapped carries the entries of registered pairs that are not
// configured from a contact's stored record into its new one: a mapping
// removed keeps its snapshots until the run that removed it has committed
// (and DropUnmapped drops them), so a run that stops, or is killed half-way
// through its commit, loses nothing of it.
func (s *Store) keepUnmapped(old, nv []byte) ([]byte, error) {
	if old == nil {
		return nv, nil
	}
	or, err := parseRecord(old)
	if err != nil {
		return nil, err
	}
	var extra []pairEntry
	if err := or.eachPair(func(e pairEntry) {
		if s.unmapped[e.id] {
			extra = append(extra, e)
		}
	}); err != nil || extra == nil {
		return nv, err
	}
	nr, err := parseRecord(nv)
	if err != nil {
		return nil, err
	}
	var all []pairEntry
	if err := nr.eachPair(func(e pairEntry) { all = append(all, e) }); err != nil {
		return nil, err
	}
	return appendRecord(nil, nr, append(all, extra...)), nil
}
