package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
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
//	[varint(CModified - CTime ms)]
//	then per pair whose agreement is older than Decided:
//	id(1) varint(Decided - Since)
//
// flags: bit 0 DSeen, bit 1 CSeen, bit 2 CConflict (Campaign showed two or
// more profiles for the contact). Pair flags pack S, DRaw, CRaw, DWritten,
// CWritten at two bits each, and bit 10 says the Campaign field's own
// change time follows; a pair with a pending write (DWritten or CWritten
// known) carries when the run that wrote it started. An agreement reached
// by the run that last changed the record (the usual case) costs no byte;
// one reached before agreement times were kept is stored as Since 0, not
// known.
//
// Older layouts are still read. Version 1, the last released one, held
// varint(DVersion), a row version parsed out of the ETag, where DETag is now,
// and neither write nor agreement times: its row version is dropped, not
// turned back into an ETag it may not have been (such a contact's next
// write reads it first), and its times read as not known (0). Builds in
// between wrote version 2 (DETag, no times) and version 3 (DETag and the
// agreement times, no write times). A record rewritten is written in the
// current layout, with what it did not know still not known. Version 4
// had neither the conflict flag nor the Campaign fields' own change times:
// its records read as holding no conflict and no such times.
const recordVersion = 5

const (
	agreedTimesVersion = 3 // the first version with agreement times
	writeTimesVersion  = 4 // the first version whose pair entries carry write times
	fieldTimesVersion  = 5 // the first with the conflict flag and the Campaign fields' own times
)

// Record and pair flags beyond the two-bit values.
const (
	flagDSeen     = 1 << 0
	flagCSeen     = 1 << 1
	flagCConflict = 1 << 2
	pairCTime     = 1 << 10
)

// encode appends snap's record. old is the record it replaces (nil: none,
// or not read): an agreement that old holds with the same value keeps the
// time it was reached; any other dates from snap.Decided, the run that
// writes it.
func (s *Store) encode(dst []byte, snap *transform.Snapshot, old *record) []byte {
	var f byte
	if snap.DSeen {
		f |= flagDSeen
	}
	if snap.CSeen {
		f |= flagCSeen
	}
	if snap.CConflict {
		f |= flagCConflict
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
		if p.CTimeKnown {
			f |= pairCTime
		}
		dst = append(dst, id, byte(f), byte(f>>8))
		if p.DWritten.Known() {
			dst = binary.AppendUvarint(dst, uint64(max(p.DWrittenAt, 0)))
		}
		if p.CWritten.Known() {
			dst = binary.AppendUvarint(dst, uint64(max(p.CWrittenAt, 0)))
		}
		if p.CTimeKnown {
			dst = binary.AppendVarint(dst, snap.CModified-p.CTime)
		}
	}
	for i, id := range s.pairIDs {
		p := snap.Pairs[i]
		if !p.S.Known() || old == nil {
			continue
		}
		if oldS, since, ok := old.agreement(id); ok && oldS == p.S && since != snap.Decided {
			dst = append(dst, id)
			dst = binary.AppendVarint(dst, snap.Decided-since)
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
	// body is the pair entries as stored, then (from version 3) the
	// agreement times.
	body []byte
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
	r.body = v[1:]
	return r, nil
}

// pairEntry is one pair of a stored record, in the current layout.
type pairEntry struct {
	id                     byte
	flags                  uint16
	dWrittenAt, cWrittenAt int64
	// cTimeAge is CModified less the Campaign field's own change time
	// (flags bit 10).
	cTimeAge int64
	// since is when the pair's agreement was reached (Unix s; 0: not
	// known), while it has one (S, the low two bits of flags, known).
	since int64
}

func (e pairEntry) appendTo(dst []byte) []byte {
	dst = append(dst, e.id, byte(e.flags), byte(e.flags>>8))
	if e.flags>>6&3 != 0 {
		dst = binary.AppendUvarint(dst, uint64(e.dWrittenAt))
	}
	if e.flags>>8&3 != 0 {
		dst = binary.AppendUvarint(dst, uint64(e.cWrittenAt))
	}
	if e.flags&pairCTime != 0 {
		dst = binary.AppendVarint(dst, e.cTimeAge)
	}
	return dst
}

// walk calls fn for each pair entry, whatever the record's version (since
// not set), and returns what follows the entries: from version 3, the
// agreement times.
func (r *record) walk(fn func(e pairEntry)) ([]byte, error) {
	v := r.body
	for range r.count {
		if len(v) < 3 {
			return nil, errTruncated
		}
		e := pairEntry{id: v[0], flags: uint16(v[1]) | uint16(v[2])<<8}
		v = v[3:]
		if r.version >= writeTimesVersion && e.flags>>6&3 != 0 {
			x, n := binary.Uvarint(v)
			if n <= 0 {
				return nil, errTruncated
			}
			e.dWrittenAt, v = int64(x), v[n:]
		}
		if r.version >= writeTimesVersion && e.flags>>8&3 != 0 {
			x, n := binary.Uvarint(v)
			if n <= 0 {
				return nil, errTruncated
			}
			e.cWrittenAt, v = int64(x), v[n:]
		}
		if r.version < fieldTimesVersion {
			e.flags &^= pairCTime
		} else if e.flags&pairCTime != 0 {
			x, n := binary.Varint(v)
			if n <= 0 {
				return nil, errTruncated
			}
			e.cTimeAge, v = x, v[n:]
		}
		fn(e)
	}
	return v, nil
}

// sinces walks the agreement times t (what walk returned): fn gets each
// pair id listed and its Since.
func (r *record) sinces(t []byte, fn func(id byte, since int64)) error {
	if r.version < agreedTimesVersion {
		return nil
	}
	for len(t) > 0 {
		id := t[0]
		d, n := binary.Varint(t[1:])
		if n <= 0 {
			return errTruncated
		}
		fn(id, r.decide-d)
		t = t[1+n:]
	}
	return nil
}

// agreement is pair id's agreed value in the record and when it was
// reached (0: not known — a record of version 1 or 2); ok is false when the
// record has no agreement for it.
func (r *record) agreement(id byte) (s extract.Tri, since int64, ok bool) {
	found := false
	t, err := r.walk(func(e pairEntry) {
		if e.id == id {
			s, found = extract.Tri(e.flags&3), true
		}
	})
	if err != nil || !found || !s.Known() {
		return extract.Unknown, 0, false
	}
	if r.version < agreedTimesVersion {
		return s, 0, true
	}
	since = r.decide
	if err := r.sinces(t, func(tid byte, at int64) {
		if tid == id {
			since = at
		}
	}); err != nil {
		return extract.Unknown, 0, false
	}
	return s, since, true
}

// eachPair calls fn for every pair entry of a record, whatever its
// version, with when its agreement was reached.
func (r *record) eachPair(fn func(e pairEntry)) error {
	var es []pairEntry
	t, err := r.walk(func(e pairEntry) { es = append(es, e) })
	if err != nil {
		return err
	}
	if r.version >= agreedTimesVersion {
		for i := range es {
			es[i].since = r.decide
		}
		err = r.sinces(t, func(id byte, since int64) {
			for i := range es {
				if es[i].id == id {
					es[i].since = since
				}
			}
		})
		if err != nil {
			return err
		}
	}
	for _, e := range es {
		fn(e)
	}
	return nil
}

// appendRecord re-encodes a parsed record, in the current layout, with
// other pair entries (a subset of its own, its own with flags changed, or
// entries of another record of the contact): an agreed entry keeps the
// time its agreement was reached, and one no longer agreed drops it.
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
	for _, e := range pairs {
		if e.flags&3 != 0 && e.since != r.decide {
			dst = append(dst, e.id)
			dst = binary.AppendVarint(dst, r.decide-e.since)
		}
	}
	return dst
}

// decode fills snap from a stored record; pairs that are no longer
// configured are passed over.
func (s *Store) decode(v []byte, snap *transform.Snapshot, slot *[256]int8) error {
	r, err := parseRecord(v)
	if err != nil {
		return err
	}
	return s.decodeRecord(&r, snap, slot)
}

// decodeRecord walks the entries itself rather than through walk: a run
// decodes every record of the file.
func (s *Store) decodeRecord(r *record, snap *transform.Snapshot, slot *[256]int8) error {
	*snap = transform.Snapshot{Known: true, DSeen: r.flags&flagDSeen != 0, CSeen: r.flags&flagCSeen != 0,
		CConflict: r.version >= fieldTimesVersion && r.flags&flagCConflict != 0,
		DModified: r.dModified, CModified: r.cModified, Decided: r.decide}
	snap.PKey = string(r.pkey)
	if len(r.etag) > 0 {
		snap.DETag = string(r.etag)
	}
	e := r.body
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
		var cAge int64
		cTime := r.version >= fieldTimesVersion && f&pairCTime != 0
		if cTime {
			x, n := binary.Varint(e)
			if n <= 0 {
				return errTruncated
			}
			cAge, e = x, e[n:]
		}
		if i := slot[id]; i >= 0 {
			snap.Pairs[i] = pairState(f)
			snap.Pairs[i].DWrittenAt, snap.Pairs[i].CWrittenAt = dAt, cAt
			if cTime {
				snap.Pairs[i].CTime, snap.Pairs[i].CTimeKnown = r.cModified-cAge, true
			}
		}
	}
	return nil
}

// Agreed is, per configured pair, when its agreement was reached: the
// start (Unix seconds) of the run that reached it; 0 when there is none or
// it is not known (reached before agreement times were kept).
type Agreed [extract.MaxFields]int64

func (s *Store) agreed(r *record) Agreed {
	var a Agreed
	for i, id := range s.pairIDs {
		if _, since, ok := r.agreement(id); ok {
			a[i] = since
		}
	}
	return a
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
	c    entryCursor // nil: no contacts bucket
	k, v []byte      // the cursor's entry; k is nil before the first Get or at the end
	// end says no key at or after endFrom exists.
	end     bool
	endFrom extract.ID
	slot    *[256]int8
	// ahead reads the records ahead of a walk (Until; nil: none begun).
	ahead *readAhead
	// rec is the record the last Get (or Until) found, parsed (valid with
	// the view).
	rec record
	// steps counts the records a walk passed, to release the mapping every
	// scanEvery.
	steps int
	// keep: what Get finds is kept for the commit, tagged with tag, the
	// commits made before the view began (kept_reads.go).
	keep bool
	tag  int64
	// leaf reads the block a lookup found on the leaf its checked descent
	// reached (leaf.go); loose says c does not stand at k then (a step
	// from k would start elsewhere: the next Get seeks).
	leaf  blockReader
	loose bool
	// page is the leaf page the last Get's lookup read (0: it went
	// through the cursor), kept with what it found.
	page uint64
	// pkeys is the PKey index, once a lookup needed it, and pkeyLeaf
	// its lookups' reader (k, a key of leaf's, stays as Get left it).
	pkeys    *packed
	pkeyLeaf blockReader
	// pread: lookups read their pages with pread (pread.go).
	pread bool
}

// stepped counts a record a walk passed.
func (r *Reader) stepped() {
	if r.steps++; r.steps%scanEvery == 0 {
		r.s.releaseMapping(r.tx)
	}
}

// Reader starts a read view; Close it when done.
func (s *Store) Reader() (*Reader, error) {
	tag := s.commits.Load() // before the view begins: a commit between makes its reads miss, never match
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", s.path, err)
	}
	r := &Reader{s: s, tx: tx, b: tx.Bucket(bucketContacts), slot: s.slots(), tag: tag, keep: !s.readOnly}
	s.viewsMu.Lock()
	if s.views == nil {
		s.views = map[*Reader]struct{}{}
	}
	s.views[r] = struct{}{}
	s.viewsMu.Unlock()
	if r.b != nil {
		r.c = s.records(r.b).Cursor()
	}
	return r, nil
}

// Get fills snap with the contact's snapshot and reports whether there was
// one. Runs ask for contacts in id order, so Get walks a cursor forward a
// step or two where it can and seeks only when it must: a tree descent per
// contact was a fifth of a repeat backfill.
func (r *Reader) Get(id extract.ID, snap *transform.Snapshot) (found bool, err error) {
	defer r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	if r.c == nil {
		return false, nil
	}
	r.s.touched(r.tx, 1)
	// Past the last key: nothing at or after endFrom exists, and ids come
	// in order, so a run over a new or small file seeks once, not per contact.
	if r.end && bytes.Compare(id[:], r.endFrom[:]) >= 0 {
		return false, nil
	}
	r.end = false
	r.page = 0
	if pc, ok := r.c.(*pcursor); ok {
		// the leaf the checked descent reaches answers most lookups (leaf.go)
		if v, found, decided := (packed{x: pc.c.x}).lookup(&r.leaf, id[:]); decided {
			r.loose, r.page = true, r.leaf.page
			if !found {
				r.k, r.v = nil, nil
				r.kept(id, nil, false)
				return false, nil
			}
			r.k, r.v = r.leaf.k, v
			if err := r.found(id, snap); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	walked := false
	// A step within a block decodes an entry; one to the next block moves
	// bbolt's cursor a key on: an id further on is sought. In a file of
	// one key per record, steps stay on the leaf the cursor stands on when
	// it is known (pages checked).
	steps := 8
	if vc, ok := r.c.(*vcursor); ok {
		steps = 4
		if vc.leaf.ok && !vc.inLeaf(id[:]) {
			steps = 0
		}
	}
	if r.loose {
		steps = 0
	}
	if r.k != nil && bytes.Compare(r.k, id[:]) < 0 && steps > 0 {
		for i := 0; i < steps && r.k != nil && bytes.Compare(r.k, id[:]) < 0; i++ {
			r.k, r.v = r.c.Next()
		}
		// Stepped onto the id, past it, or off the end: the answer is here.
		walked = r.k == nil || bytes.Compare(r.k, id[:]) >= 0
	}
	if !walked && (r.loose || r.k == nil || !bytes.Equal(r.k, id[:])) {
		r.k, r.v = r.c.Seek(id[:])
		r.loose = false
	}
	if r.k == nil {
		r.end, r.endFrom = true, id
		r.kept(id, nil, false)
		return false, nil
	}
	if !bytes.Equal(r.k, id[:]) {
		r.kept(id, nil, false)
		return false, nil
	}
	if err := r.found(id, snap); err != nil {
		return false, err
	}
	return true, nil
}

// found decodes id's record, r.v, into snap and keeps it.
func (r *Reader) found(id extract.ID, snap *transform.Snapshot) error {
	rec, err := parseRecord(r.v)
	if err == nil {
		err = r.s.decodeRecord(&rec, snap, r.slot)
	}
	if err != nil {
		return &CorruptError{Path: r.s.path, Problem: fmt.Sprintf("contact %s: %v", id, err)}
	}
	r.rec = rec
	r.kept(id, r.v, true)
	return nil
}

func (r *Reader) kept(id extract.ID, v []byte, found bool) {
	if r.keep {
		r.s.reads.keep(id, v, found, r.tag, r.page)
	}
}

// Agreed says when the agreements of the record the last Get found were
// reached.
func (r *Reader) Agreed() Agreed { return r.s.agreed(&r.rec) }

// Close ends the view (and a walk's reading ahead first).
func (r *Reader) Close() error {
	r.ahead.halt()
	r.s.viewsMu.Lock()
	_, open := r.s.views[r]
	delete(r.s.views, r)
	r.s.viewsMu.Unlock()
	if !open {
		return nil // rolled back by Store.Close already
	}
	return r.tx.Rollback()
}

// Batch collects snapshot changes and decision-log entries in memory,
// encoded, for one Commit. What can be worked out before the commit is
// worked out as the batch is filled (in a run's commit, by the goroutine
// that decides the next chunk while bbolt writes this one): records and
// log entries encoded and sealed, the index keys of the records written.
// The transaction then only puts them.
type Batch struct {
	s *Store
	// pages are the leaf pages a night's lookups found the batch's
	// records on (not in order, repeats allowed): its transaction maps
	// them in at once (quiet_linux.go, populate).
	pages []uint64
	keys  []extract.ID
	ends  []uint32
	data  []byte
	// counted[i] says the change keys[i] makes to the totals is in delta
	// already (PutRead); the others are counted against the file when
	// committed.
	counted []bool
	// For a counted entry: oldPK and oldAts are the index keys of the
	// record it replaces, newPK and newAts those of the record written
	// (indexKeys).
	oldPK, newPK   [][]byte
	oldAts, newAts [][]int64
	delta          counts
	log            logBatch
	// whole holds blocks of the PKey index written whole (a backfill's),
	// in key order, each its key then its entries sealed (wholeKeyEnds,
	// wholeEnds: where each ends): every block of its range, which runs
	// from after wholeAfter (nil: the first key) to its last block's key,
	// or to the end with wholeToEnd. inWhole says the batch has a range.
	// built says its transaction is the run's last: it marks the index
	// built.
	whole        []byte
	wholeKeyEnds []uint32
	wholeEnds    []uint32
	wholeAfter   []byte
	wholeToEnd   bool
	inWhole      bool
	built        bool
	// wholePK says the commit writes the PKey index whole (it dropped
	// the index first): the records' own keys of it are not worked out,
	// a million small allocations in a backfill.
	wholePK bool
	// keyArena and atArena hold newPK's and newAts' keys and times, one
	// allocation for many (Reset keeps the last of each).
	keyArena []byte
	atArena  []int64
	// scratch, when set, is the memory its commits work in, kept from one
	// to the next (a committer's batches, which commit one after another,
	// sixty-odd times in a backfill, share one); nil: each its own.
	scratch *commitScratch
}

// commitScratch is the memory of the transaction that commits a batch,
// used by one commit at a time: what it held is free once that commit
// returns (its transaction ended).
type commitScratch struct {
	idx  []int
	puts []blockOp
	ops  indexOps
	pack packScratch
	// first says the next batch put is its transaction's first: nothing
	// was written to the records in the transaction before it.
	first bool
}

// NewBatch starts an empty batch sized for about n contacts.
func (s *Store) NewBatch(n int) *Batch {
	return &Batch{s: s, keys: make([]extract.ID, 0, n), ends: make([]uint32, 0, n), data: make([]byte, 0, n*(24+3*len(s.pairIDs))),
		counted: make([]bool, 0, n), oldPK: make([][]byte, 0, n), oldAts: make([][]int64, 0, n),
		newPK: make([][]byte, 0, n), newAts: make([][]int64, 0, n)}
}

// Put records the contact's new snapshot.
// Its agreements date from snap.Decided.
func (b *Batch) Put(id extract.ID, snap *transform.Snapshot) {
	b.put(id, snap, nil)
}

func (b *Batch) put(id extract.ID, snap *transform.Snapshot, old *record) {
	b.keys = append(b.keys, id)
	// not sealed: the commit packs records into blocks, sealed per block
	b.data = b.s.encode(b.data, snap, old)
	b.ends = append(b.ends, uint32(len(b.data)))
	b.counted = append(b.counted, false)
	b.oldPK, b.oldAts = append(b.oldPK, nil), append(b.oldAts, nil)
	b.newPK, b.newAts = append(b.newPK, nil), append(b.newAts, nil)
}

// PutRead records the contact's new snapshot over the record r last read
// for it (r.Get(id) just now; none when it found none), which must still be
// what the file holds when the batch commits: the run's own reads, under
// its run lock, of contacts no other batch of it writes. r reads the
// mapping (not a run's lookups' reader, WithPrior's, whose record read
// lasts until its next lookup only: pread.go). The totals then
// change without looking the record up again in the commit, which was a
// third of its time. An agreement the record held with the same value
// keeps the time it was reached.
func (b *Batch) PutRead(r *Reader, id extract.ID, snap *transform.Snapshot) {
	var old *record
	if r.k != nil && !r.end && bytes.Equal(r.k, id[:]) {
		old = &r.rec
	}
	b.putOver(id, snap, old)
}

// putOver is PutRead over old, the record read (nil: none), decoded
// already.
func (b *Batch) putOver(id extract.ID, snap *transform.Snapshot, old *record) {
	if old != nil {
		// Get decoded the record, entries and all: walking it again
		// cannot fail.
		_ = b.delta.addRecord(old, -1)
	}
	b.put(id, snap, old)
	b.delta.addSnapshot(snap, b.s.pairIDs, 1)
	i := len(b.counted) - 1
	b.counted[i] = true
	var pk []byte
	var ats []int64
	if b.wholePK {
		ats, _ = recordAts(old)
	} else {
		pk, ats, _ = indexKeys(old, id)
	}
	if pk == nil {
		pk = []byte{} // known: none
	}
	b.oldPK[i], b.oldAts[i] = pk, ats
	// The new record's keys, from the snapshot it was encoded from: what
	// indexKeys finds in it once written (TestBatchKeysAsParsed), without
	// parsing it back (a record and a slice of times allocated per
	// contact, a million in a backfill).
	if !b.wholePK && snap.CSeen && snap.PKey != "" {
		at := b.growKeys(len(snap.PKey) + 1 + 16)
		b.keyArena = appendPKeyKey(b.keyArena, snap.PKey, id)
		b.newPK[i] = b.keyArena[at:len(b.keyArena):len(b.keyArena)]
	}
	b.newAts[i] = b.snapshotAts(snap)
}

// growKeys makes room for n bytes in keyArena without moving the keys in it
// already (a new one when full: they keep the old one).
func (b *Batch) growKeys(n int) int {
	if cap(b.keyArena)-len(b.keyArena) < n {
		b.keyArena = make([]byte, 0, max(64<<10, n))
	}
	return len(b.keyArena)
}

// snapshotAts is recordAts of the record encode makes of snap (nil: none),
// in the batch's memory: the times of its pending writes, sorted, each once.
func (b *Batch) snapshotAts(snap *transform.Snapshot) []int64 {
	n := 0
	for i := range b.s.pairIDs {
		p := &snap.Pairs[i]
		if p.DWritten.Known() {
			n++
		}
		if p.CWritten.Known() {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if cap(b.atArena)-len(b.atArena) < n {
		b.atArena = make([]int64, 0, max(4<<10, n))
	}
	from := len(b.atArena)
	for i := range b.s.pairIDs {
		p := &snap.Pairs[i]
		if p.DWritten.Known() {
			b.atArena = append(b.atArena, max(p.DWrittenAt, 0))
		}
		if p.CWritten.Known() {
			b.atArena = append(b.atArena, max(p.CWrittenAt, 0))
		}
	}
	ats := b.atArena[from:]
	slices.Sort(ats)
	ats = slices.Compact(ats)
	b.atArena = b.atArena[:from+len(ats)]
	return ats[:len(ats):len(ats)]
}

// noRecords says whether the file holds no contact record.
func (s *Store) noRecords() (none bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContacts)
		if b == nil {
			none = true
			return nil
		}
		k, _ := s.records(b).Cursor().First()
		none = k == nil
		return nil
	})
	return none, err
}

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.keys, b.ends, b.data, b.counted = b.keys[:0], b.ends[:0], b.data[:0], b.counted[:0]
	for _, x := range []*[][]byte{&b.oldPK, &b.newPK} {
		clear(*x)
		*x = (*x)[:0]
	}
	for _, x := range []*[][]int64{&b.oldAts, &b.newAts} {
		clear(*x)
		*x = (*x)[:0]
	}
	b.keyArena, b.atArena = b.keyArena[:0], b.atArena[:0]
	b.delta = counts{}
	b.log.reset()
	b.whole, b.wholeKeyEnds, b.wholeEnds, b.built = b.whole[:0], b.wholeKeyEnds[:0], b.wholeEnds[:0], false
	b.wholeAfter, b.wholeToEnd, b.inWhole = b.wholeAfter[:0], false, false
	b.pages = b.pages[:0]
}

// AddLog records a decision in the decision log. Entries of one batch
// belong to one run, whose id and mappings are kept once.
func (b *Batch) AddLog(e LogEntry, runID string, pairs []transform.Pair) {
	if b.log.run == nil || b.log.run.ID != runID {
		b.log.run = &logRun{ID: runID, Pairs: pairs}
	}
	b.log.add(&e)
}

// wholeBlock is the batch's ith block of the PKey index written whole:
// its key, and its entries sealed.
func (b *Batch) wholeBlock(i int) (k, v []byte) {
	from := uint32(0)
	if i > 0 {
		from = b.wholeEnds[i-1]
	}
	return b.whole[from:b.wholeKeyEnds[i]], b.whole[b.wholeKeyEnds[i]:b.wholeEnds[i]]
}

// addWhole adds the next block of the PKey index written whole (blocks
// come in order), sealed here.
func (b *Batch) addWhole(bk, entries []byte) error {
	b.whole = append(b.whole, bk...)
	start := len(b.whole)
	b.wholeKeyEnds = append(b.wholeKeyEnds, uint32(start))
	b.whole = append(b.whole, entries...)
	b.whole = appendSeal(b.whole, start, bk)
	b.wholeEnds = append(b.wholeEnds, uint32(len(b.whole)))
	return nil
}

// Len is the number of snapshots in the batch.
func (b *Batch) Len() int { return len(b.keys) }

// Final is what the last transaction of a run records besides snapshots.
type Final struct {
	Run    *Run
	Files  []ProcessedFile // input files now processed
	Config *ConfigRecord   // the mapping, direction and policy the run used
	// Restamp are files processed before, seen again under a stamp
	// (ProcessedFile.Seen) their records take now.
	Restamp []ProcessedFile
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
	return s.commitEach(ctx, func(put func(*Batch, *Final) error) error { return put(b, fin) })
}

// commitEach writes in one transaction each batch fill hands to put, as
// Commit writes one (fin's records with the batch it comes with). A batch
// may be changed again once put returns, except for what holdBatch takes
// from it, which bbolt keeps until the transaction commits. The batches
// share one scratch (that of the first, when it has one).
func (s *Store) commitEach(ctx context.Context, fill func(put func(*Batch, *Final) error) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var sc *commitScratch
	err := s.update(func(tx *bolt.Tx) error {
		return fill(func(b *Batch, fin *Final) error {
			if sc == nil {
				if sc = b.scratch; sc == nil {
					sc = &commitScratch{}
				}
				// What the scratch's last transaction held is free: it ended.
				sc.pack.seals.reset()
				sc.first = true
			}
			return s.putBatch(tx, b, fin, sc)
		})
	})
	if err == nil {
		s.persisted()
	}
	return err
}

// populate maps pages ids of the state file in at once, where a night's
// commit has turned fault-around off (quietFaults.populate), and has a
// goroutine read a byte of each, in the order ids gives, while the caller
// goes on. On a paravirtual guest with shadow page tables the first read
// of a page mapped in still waits for the host's own entry (5.5 – 9 µs a
// page), which the commit paid once for each leaf it changes: the other
// core, which a night's deciding leaves mostly idle while it commits, now
// pays it ahead of the commit's reads. wait waits for that goroutine; it
// is to be called before the transaction commits (bbolt may map the file
// again then), and the caller's reads need not wait for it.
func (s *Store) populate(tx *bolt.Tx, ids []uint64) (wait func()) {
	if len(ids) == 0 || !s.quiet.populating() {
		return func() {}
	}
	info := s.db.Info()
	if info == nil || info.Data == 0 {
		return func() {}
	}
	data, ps := mappedAt(info.Data, tx.Size()), uint64(info.PageSize)
	order := slices.Clone(ids) // populate sorts ids; the reads come in this order
	s.quiet.populate(data, ps, ids)
	return touchPages(data, ps, order)
}

// touchPages reads the first byte of each page of data that ids names (of
// ps bytes; those past data skipped), in that order, on a goroutine of its
// own; wait waits for it. A page that cannot be read (a file cut short
// under its mapping) ends it there: the reads that need the page report
// it.
func touchPages(data []byte, ps uint64, ids []uint64) (wait func()) {
	read := make(chan byte, 1)
	go func() {
		var sum byte
		defer func() {
			_ = recover()
			read <- sum
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		for _, id := range ids {
			if (id+1)*ps <= uint64(len(data)) {
				sum += data[id*ps]
			}
		}
	}()
	return func() { <-read }
}

// putBatch writes the batch into tx, with fin's records when fin is not
// nil, working in sc's memory.
func (s *Store) putBatch(tx *bolt.Tx, b *Batch, fin *Final, sc *commitScratch) error {
	defer s.populate(tx, b.pages)()
	idx := sc.idx[:0]
	for i := range b.keys {
		idx = append(idx, i)
	}
	sc.idx = idx
	// Joins hand contacts over in id order already; appending in key order
	// is what keeps bbolt's pages full and its writes sequential.
	byKey := func(x, y int) int { return b.keys[x].Compare(b.keys[y]) }
	if !slices.IsSortedFunc(idx, byKey) {
		slices.SortStableFunc(idx, byKey)
	}
	if err := s.persist(tx); err != nil {
		return fmt.Errorf("state %s: %w", s.path, err)
	}
	c, _, err := s.loadCounts(tx)
	if err != nil {
		return fmt.Errorf("state %s: %w", s.path, err)
	}
	bk := tx.Bucket(bucketContacts)
	bk.FillPercent = 0.9
	vb := s.records(bk)
	vb.p.sc = &sc.pack
	// The first batch of a transaction finds its floor blocks on their
	// committed leaves (packed.floorInLeaf); a later one, after the
	// batches before it wrote the records, the slow way.
	vb.p.fresh, sc.first = sc.first, false
	// The records are written after they are all read: a contact put
	// twice (a batch may) reads the value put before it.
	puts := slices.Grow(sc.puts[:0], len(idx))
	defer func() { sc.puts = puts[:0] }()
	get := func(k []byte) []byte {
		if n := len(puts); n > 0 && bytes.Equal(puts[n-1].k, k) {
			return puts[n-1].v
		}
		return vb.Get(k)
	}
	ops := &sc.ops
	ops.reset()
	ops.pack = &sc.pack
	pk, pd := s.indexesBuilt(tx)
	ops.noPK, ops.noPD = !pk, !pd
	if b.wholePK && pk {
		return fmt.Errorf("state %s: a batch that writes the PKey index whole, but the file's index is built", s.path)
	}
	for _, i := range idx {
		from := uint32(0)
		if i > 0 {
			from = b.ends[i-1]
		}
		k := b.keys[i][:]
		v := b.data[from:b.ends[i]]
		carried := false
		if len(s.unmapped) > 0 {
			var nv []byte
			var err error
			nv, carried, err = s.keepUnmapped(get(k), v)
			if err != nil {
				return fmt.Errorf("state %s: contact %s: %w", s.path, b.keys[i], err)
			}
			if carried && b.counted[i] {
				// the delta counts the record without the carried entries
				if err := c.change(v, nv); err != nil {
					return fmt.Errorf("state %s: contact %s: %w", s.path, b.keys[i], err)
				}
			}
			if carried {
				v = nv
			}
		}
		if !b.counted[i] {
			old := get(k)
			if err := c.change(old, v); err != nil {
				return fmt.Errorf("state %s: contact %s: %w", s.path, b.keys[i], err)
			}
			if err := ops.changeValues(b.keys[i], old, v); err != nil {
				return fmt.Errorf("state %s: contact %s: %w", s.path, b.keys[i], err)
			}
		} else {
			npk, nats := b.newPK[i], b.newAts[i]
			if carried {
				nr, err := parseRecord(v)
				if err == nil {
					npk, nats, err = indexKeys(&nr, b.keys[i])
				}
				if err != nil {
					return fmt.Errorf("state %s: contact %s: %w", s.path, b.keys[i], err)
				}
			}
			opk := b.oldPK[i]
			if len(opk) == 0 {
				opk = nil
			}
			ops.changeKeys(b.keys[i], opk, b.oldAts[i], npk, nats)
		}
		if n := len(puts); n > 0 && bytes.Equal(puts[n-1].k, k) {
			puts = puts[:n-1]
		}
		puts = append(puts, blockOp{k: k, v: v, put: true})
	}
	if err := vb.apply(puts); err != nil {
		return fmt.Errorf("state %s: writing contacts: %w", s.path, err)
	}
	c.merge(&b.delta)
	if err := s.putLog(tx, &b.log, &sc.pack); err != nil {
		return fmt.Errorf("state %s: writing the decision log: %w", s.path, err)
	}
	if err := s.putWhole(tx, b); err != nil {
		return fmt.Errorf("state %s: writing the PKey index: %w", s.path, err)
	}
	if fin != nil {
		if err := s.finish(tx, fin, c, ops); err != nil {
			return err
		}
	}
	if err := s.applyIndex(tx, ops); err != nil {
		return fmt.Errorf("state %s: %w", s.path, err)
	}
	if err := s.wholeBuilt(tx, b); err != nil {
		return fmt.Errorf("state %s: %w", s.path, err)
	}
	return s.storeCounts(tx, c)
}

// keepUnmapped carries the entries of registered pairs that are not
// configured from a contact's stored record into its new one: a mapping
// removed keeps its snapshots until the run that removed it has committed
// (and DropUnmapped drops them), so a run that stops, or is killed half-way
// through its commit, loses nothing of it.
// Their agreements keep the times they were reached. carried says the
// record changed.
func (s *Store) keepUnmapped(old, nv []byte) (_ []byte, carried bool, _ error) {
	if old == nil {
		return nv, false, nil
	}
	or, err := parseRecord(old)
	if err != nil {
		return nil, false, err
	}
	var extra []pairEntry
	if err := or.eachPair(func(e pairEntry) {
		if s.unmapped[e.id] {
			extra = append(extra, e)
		}
	}); err != nil || extra == nil {
		return nv, false, err
	}
	nr, err := parseRecord(nv)
	if err != nil {
		return nil, false, err
	}
	var all []pairEntry
	if err := nr.eachPair(func(e pairEntry) { all = append(all, e) }); err != nil {
		return nil, false, err
	}
	return appendRecord(nil, nr, append(all, extra...)), true, nil
}
