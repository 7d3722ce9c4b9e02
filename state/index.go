package state

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// Two indexes let a night touch what changed instead of every record:
//
//   - pkeys: PKey, 0, contact id (no value), one entry per record that
//     links its contact to a profile (Campaign side read, a PKey), packed
//     several to a bbolt key (packed.go). A run whose input links a PKey
//     to a contact finds through it the contact state linked that profile
//     to before (issue 8: that contact loses it), and the shrink guard
//     counts Campaign's records by PKey. An index of one key per entry
//     (before the blocks; marked index_pkeys) is not used: the first run
//     that finds it builds the packed one in its place.
//   - pending: start of the run that wrote (Unix ms, 8 bytes big-endian),
//     contact id (no value), one entry per contact and run with a write to
//     an update file not seen yet: the contacts a warning names. Packed in
//     blocks like pkeys; an index of one key per entry (marked
//     index_pending) is built again, packed, by the first run that finds
//     it.
//
// Both change in the same transaction as the records they index, so a run
// killed at any point leaves them true. A backfill rewrites the pkeys index
// whole instead (every record's entry, in PKey order, a part beside each
// chunk of its records and the rest after them): it drops the index with
// its first write and marks it built in its last
// transaction, so an index a killed backfill left half-built is never
// used, only built again. A file from before them gets both, once, from
// the first run that opens it (BuildIndexes).
var (
	bucketPKeys   = []byte("pkeys")
	bucketPending = []byte("pending")
	keyPKeysOK    = []byte("index_pkeys_packed")
	// keyPKeysFlat marked the index of one key per entry. An older optsync
	// that rebuilds the index in that layout marks it so, and the packed
	// one is then not taken as built: one of the markers goes whenever the
	// other is written.
	keyPKeysFlat = []byte("index_pkeys")
	// keyPendingOK, keyPendingFlat: the same pair for the index of pending
	// writes.
	keyPendingOK   = []byte("index_pending_packed")
	keyPendingFlat = []byte("index_pending")
)

func pkeyIndexKey(pkey []byte, id extract.ID) []byte {
	return appendPKeyKey(make([]byte, 0, len(pkey)+1+16), pkey, id)
}

// appendPKeyKey appends the pkeys index's key of (pkey, id).
func appendPKeyKey[S []byte | string](dst []byte, pkey S, id extract.ID) []byte {
	return append(append(append(dst, pkey...), 0), id[:]...)
}

func pendingIndexKey(at int64, id extract.ID) []byte {
	return appendPendingKey(make([]byte, 0, 24), at, id)
}

// appendPendingKey appends the pending index's key of (at, id).
func appendPendingKey(dst []byte, at int64, id extract.ID) []byte {
	return append(binary.BigEndian.AppendUint64(dst, uint64(at)), id[:]...)
}

// indexKeys are the index entries a record makes: its pkeys key (nil:
// none) and the runs of its pending writes (sorted, once each).
func indexKeys(r *record, id extract.ID) (pk []byte, ats []int64, err error) {
	if r == nil {
		return nil, nil, nil
	}
	if r.flags&flagCSeen != 0 && len(r.pkey) > 0 {
		pk = pkeyIndexKey(r.pkey, id)
	}
	ats, err = recordAts(r)
	return pk, ats, err
}

// recordAts are the runs of a record's pending writes (sorted, once
// each): its entries of the pending index.
func recordAts(r *record) (ats []int64, err error) {
	if r == nil {
		return nil, nil
	}
	_, err = r.walk(func(e pairEntry) {
		if e.flags>>6&3 != 0 {
			ats = append(ats, e.dWrittenAt)
		}
		if e.flags>>8&3 != 0 {
			ats = append(ats, e.cWrittenAt)
		}
	})
	slices.Sort(ats)
	return slices.Compact(ats), err
}

// indexOps collects the index changes of one transaction, to apply in key
// order: per key, the last change (put: the entry is put, else deleted) —
// a contact written twice in one transaction changes its entries twice.
// Keys are copied into one buffer, not one allocation each: a backfill
// changes an entry of most records.
type indexOps struct {
	pk, pd []indexOp
	buf    []byte
	// noPK, noPD: that index is not kept now (a backfill writes the PKey
	// index whole): its changes are not collected.
	noPK, noPD bool
	// pack, when set, is the memory applyIndex writes the blocks with
	// (nil: their own).
	pack *packScratch
	// keys and leaves are applyIndex's scratch for the leaves it maps in.
	keys   [][]byte
	leaves []uint64
}

type indexOp struct {
	k   []byte
	put bool
}

// reset empties the changes for the next transaction, keeping their
// memory (its last buffer of keys): bbolt copied the keys it keeps.
func (o *indexOps) reset() {
	o.pk, o.pd, o.buf = o.pk[:0], o.pd[:0], o.buf[:0]
	o.noPK, o.noPD = false, false
}

// add notes a change of key k (appended to o.buf by the caller from
// o.buf[from:]).
func (o *indexOps) add(ops *[]indexOp, from int, put bool) {
	*ops = append(*ops, indexOp{o.buf[from:len(o.buf):len(o.buf)], put})
}

func (o *indexOps) addKey(ops *[]indexOp, k []byte, put bool) {
	from := o.grow(len(k))
	o.buf = append(o.buf, k...)
	o.add(ops, from, put)
}

func (o *indexOps) addPending(at int64, id extract.ID, put bool) {
	from := o.grow(24)
	o.buf = appendPendingKey(o.buf, at, id)
	o.add(&o.pd, from, put)
}

// grow makes room for n bytes in buf without moving the keys noted
// already (a new buffer when full: they keep the old one).
func (o *indexOps) grow(n int) int {
	if cap(o.buf)-len(o.buf) < n {
		o.buf = make([]byte, 0, max(64<<10, n))
	}
	return len(o.buf)
}

// change adds what replacing old by new (either nil) changes in the
// indexes.
func (o *indexOps) change(id extract.ID, old, new *record) error {
	opk, oats, err := indexKeys(old, id)
	if err != nil {
		return err
	}
	npk, nats, err := indexKeys(new, id)
	if err != nil {
		return err
	}
	o.changeKeys(id, opk, oats, npk, nats)
	return nil
}

// changeKeys is change for index keys worked out already.
func (o *indexOps) changeKeys(id extract.ID, opk []byte, oats []int64, npk []byte, nats []int64) {
	if !o.noPK && !bytes.Equal(opk, npk) {
		if opk != nil {
			o.addKey(&o.pk, opk, false)
		}
		if npk != nil {
			o.addKey(&o.pk, npk, true)
		}
	}
	if o.noPD {
		return
	}
	for _, at := range oats {
		if _, found := slices.BinarySearch(nats, at); !found {
			o.addPending(at, id, false)
		}
	}
	for _, at := range nats {
		if _, found := slices.BinarySearch(oats, at); !found {
			o.addPending(at, id, true)
		}
	}
}

// changeValues is change for stored values (nil: none).
func (o *indexOps) changeValues(id extract.ID, old, new []byte) error {
	var or, nr *record
	if old != nil {
		r, err := parseRecord(old)
		if err != nil {
			return err
		}
		or = &r
	}
	if new != nil {
		r, err := parseRecord(new)
		if err != nil {
			return err
		}
		nr = &r
	}
	return o.change(id, or, nr)
}

// applyIndex writes the changes into the indexes that are kept (an index
// not marked built is left alone: it is built whole later).
func (s *Store) applyIndex(tx *bolt.Tx, o *indexOps) error {
	pk, pd := s.indexesBuilt(tx)
	var blockOps []blockOp
	if o.pack != nil {
		blockOps = o.pack.ops[:0]
		defer func() { o.pack.ops = blockOps[:0] }()
	}
	apply := func(built bool, name []byte, ops []indexOp) error {
		if !built || len(ops) == 0 {
			return nil
		}
		b, err := tx.CreateBucketIfNotExists(name)
		if err != nil {
			return err
		}
		// A run's changes come in contact order: a pending write's key
		// (its run's start, the contact) mostly in key order already.
		byKey := func(x, y indexOp) int { return bytes.Compare(x.k, y.k) }
		if !slices.IsSortedFunc(ops, byKey) {
			slices.SortStableFunc(ops, byKey)
		}
		blockOps = blockOps[:0]
		for i, op := range ops {
			if i+1 < len(ops) && bytes.Equal(ops[i+1].k, op.k) {
				continue // changed again later in the transaction: the last change counts
			}
			blockOps = append(blockOps, blockOp{k: op.k, put: op.put})
		}
		p := s.packed(b, string(name))
		p.sc = o.pack
		if s.quiet.populating() && p.x.pv != nil {
			// The ops' leaves, mapped in at once where a night's commit
			// has turned fault-around off: the index's changes (a
			// pending write done, at the run that made it) lie all over
			// its leaves, one fault each.
			o.keys = o.keys[:0]
			for _, op := range blockOps {
				o.keys = append(o.keys, op.k)
			}
			o.leaves = p.x.pv.leavesOf(p.x.root, o.keys, string(name), o.leaves[:0])
			defer s.populate(tx, o.leaves)()
		}
		return p.apply(blockOps)
	}
	if err := apply(pk, bucketPKeys, o.pk); err != nil {
		return fmt.Errorf("the PKey index: %w", err)
	}
	if err := apply(pd, bucketPending, o.pd); err != nil {
		return fmt.Errorf("the index of pending writes: %w", err)
	}
	o.pk, o.pd = o.pk[:0], o.pd[:0]
	return nil
}

// indexesBuilt says which indexes are built (and so kept by every write).
func (s *Store) indexesBuilt(tx *bolt.Tx) (pkeys, pending bool) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return false, false
	}
	vm := s.vb(meta, "meta")
	return vm.Get(keyPKeysOK) != nil && vm.Get(keyPKeysFlat) == nil, vm.Get(keyPendingOK) != nil && vm.Get(keyPendingFlat) == nil
}

// IndexesReady says whether the indexes are built: a run can then find a
// profile's contact and count pending writes without reading every
// record, and append its decisions to the log's index (log.go).
func (s *Store) IndexesReady() (bool, error) {
	var pk, pd, lg bool
	err := s.view(func(tx *bolt.Tx) error {
		pk, pd = s.indexesBuilt(tx)
		lg = s.logIndexed(tx)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("state %s: %w", s.path, err)
	}
	return pk && pd && lg, nil
}

// markIndexes marks a new file's (empty) indexes built.
func (s *Store) markIndexes(tx *bolt.Tx) error {
	vm := s.vb(tx.Bucket(bucketMeta), "meta")
	for _, k := range [][]byte{keyPKeysOK, keyPendingOK, keyLogPackedOK} {
		if err := vm.Put(k, []byte("1")); err != nil {
			return err
		}
	}
	return nil
}

// indexChunk bounds one transaction of an index written whole: bbolt holds
// a transaction's pages in memory.
const indexChunk = 1 << 16

// BuildIndexes builds the indexes a file lacks (made before them, or a
// backfill that rewrote the PKey index was killed) from every record, and
// the log's from the log: once, by the first run that finds them missing.
// Entries are sorted in runs on disk in dir beyond budget bytes. It
// returns how many records it read (0: no record index was missing).
func (s *Store) BuildIndexes(ctx context.Context, budget int64, dir string) (int, error) {
	var pk, pd, lg bool
	if err := s.view(func(tx *bolt.Tx) error {
		pk, pd = s.indexesBuilt(tx)
		lg = s.logIndexed(tx)
		return nil
	}); err != nil {
		return 0, err
	}
	if !lg {
		if err := s.buildLogIndex(ctx, budget, dir); err != nil {
			return 0, fmt.Errorf("state %s: building the decision log's index: %w", s.path, err)
		}
	}
	if pk && pd {
		return 0, nil
	}
	pkeys := newKeySorter(budget/2, dir)
	defer pkeys.Close()
	pending := newKeySorter(budget/2, dir)
	defer pending.Close()
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContacts)
		if b == nil {
			return nil
		}
		return s.records(b).ForEach(func(k, v []byte) error {
			if n++; n&0xffff == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				s.releaseMapping(tx)
			}
			var id extract.ID
			copy(id[:], k)
			r, err := parseRecord(v)
			if err != nil {
				return fmt.Errorf("contact %s: %w", id, err)
			}
			key, ats, err := indexKeys(&r, id)
			if err != nil {
				return fmt.Errorf("contact %s: %w", id, err)
			}
			if key != nil && !pk {
				if err := pkeys.Add(&key); err != nil {
					return err
				}
			}
			for _, at := range ats {
				if !pd {
					k := pendingIndexKey(at, id)
					if err := pending.Add(&k); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("state %s: building its indexes: %w", s.path, err)
	}
	for _, x := range []struct {
		done         bool
		name         []byte
		marker, flat []byte
		keys         *spill.Sorter[[]byte]
	}{{pk, bucketPKeys, keyPKeysOK, keyPKeysFlat, pkeys}, {pd, bucketPending, keyPendingOK, keyPendingFlat, pending}} {
		if x.done {
			continue
		}
		stream, err := x.keys.Sorted()
		if err != nil {
			return 0, err
		}
		next := func() ([]byte, error) {
			if k := stream.Next(); k != nil {
				return *k, nil
			}
			return nil, stream.Err()
		}
		err = s.writeIndex(ctx, x.name, x.marker, x.flat, true, next, nil)
		stream.Close()
		if err != nil {
			return 0, fmt.Errorf("state %s: building its indexes: %w", s.path, err)
		}
	}
	return n, nil
}

// newKeySorter sorts byte keys, in runs on disk in dir beyond budget.
func newKeySorter(budget int64, dir string) *spill.Sorter[[]byte] {
	return spill.NewSorter(spill.Codec[[]byte]{
		Compare: func(a, b *[]byte) int { return bytes.Compare(*a, *b) },
		Append:  func(dst []byte, k *[]byte) []byte { return append(dst, *k...) },
		Decode:  func(b []byte, k *[]byte) error { *k = append((*k)[:0], b...); return nil },
		Size:    func(k *[]byte) int { return len(*k) },
		Key:     func(k *[]byte) uint64 { return spill.PrefixKey(string(*k)) },
	}, budget, dir, 24)
}

// buildLogIndex builds log_index_packed from the log (a file from before
// it): written whole in transactions of its own, the last of which marks
// it built, drops log_contact or log_index (one key per entry) and its
// mark, and stores the schema that says so. Until then the index the file
// had is the index, and every write keeps it.
func (s *Store) buildLogIndex(ctx context.Context, budget int64, dir string) error {
	keys := newKeySorter(budget, dir)
	defer keys.Close()
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		if b == nil {
			return nil
		}
		return s.vb(b, "log").ForEach(func(k, v []byte) error {
			if n++; n%scanEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				s.releaseMapping(tx)
			}
			if len(k) != 12 || len(v) < 16 {
				return &CorruptError{Path: s.path, Problem: fmt.Sprintf("decision log entry %x: %v", k, errLogEntry)}
			}
			var contact extract.ID
			copy(contact[:], v)
			ik := logIndexKey(k, contact)
			return keys.Add(&ik)
		})
	})
	if err != nil {
		return err
	}
	stream, err := keys.Sorted()
	if err != nil {
		return err
	}
	defer stream.Close()
	return s.writeIndex(ctx, bucketLogPacked, keyLogPackedOK, nil, true, func() ([]byte, error) {
		if k := stream.Next(); k != nil {
			return *k, nil
		}
		return nil, stream.Err()
	}, func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLogContact, bucketLogIndex} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		if err := s.vb(tx.Bucket(bucketMeta), "meta").Delete(keyLogIndexOK); err != nil {
			return err
		}
		// an older optsync would write its entries to log_contact only
		return s.vb(tx.Bucket(bucketMeta), "meta").Put(keySchema, []byte(fmt.Sprint(SchemaVersion)))
	})
}

// writeIndex replaces an index with the keys next gives (in order), in
// transactions of indexChunk keys, and marks it built with the last, in
// which fin (when set) runs too. flat (when set) is the marker of the
// index's layout of one key per entry in the same bucket, dropped with the
// first. pack packs the keys into blocks (packed.go).
func (s *Store) writeIndex(ctx context.Context, name, marker, flat []byte, pack bool, next func() ([]byte, error), fin func(*bolt.Tx) error) error {
	if err := s.update(func(tx *bolt.Tx) error {
		vm := s.vb(tx.Bucket(bucketMeta), "meta")
		if err := vm.Delete(marker); err != nil {
			return err
		}
		if flat != nil {
			if err := vm.Delete(flat); err != nil {
				return err
			}
		}
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		_, err := tx.CreateBucket(name)
		return err
	}); err != nil {
		return err
	}
	var packer blockPacker
	k, err := next()
	for finished := false; !finished; {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err = s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(name)
			b.FillPercent = 1 // appended in key order
			vb := s.vb(b, string(name))
			// a block still being filled when a transaction ends goes
			// with the next (Put seals a copy)
			packer.emit = vb.Put
			for n := 0; k != nil && n < cmp.Or(s.indexChunk, indexChunk); n++ {
				if pack {
					err = packer.add(k, nil)
				} else {
					err = vb.Put(k, nil)
				}
				if err != nil {
					return err
				}
				if k, err = next(); err != nil {
					return err
				}
			}
			if k != nil {
				return nil
			}
			if err := packer.flush(); err != nil {
				return err
			}
			finished = true
			if fin != nil {
				if err := fin(tx); err != nil {
					return err
				}
			}
			return s.vb(tx.Bucket(bucketMeta), "meta").Put(marker, []byte("1"))
		})
	}
	return err
}

// DropPKeyIndex starts a rewrite of the PKey index whole (a backfill, which
// reads every record): from this transaction on, commits leave it alone
// and it is not used (a run that finds it so builds it again), until the
// transaction with the last of the run's records marks it built. Its
// entries stay: each chunk of the commit brings the keys of a range of
// PKeys (Batch.addWhole, in order), and putWhole makes the index hold
// exactly those in that range, so a backfill over a state that holds most
// of them already writes only what changed.
func (s *Store) DropPKeyIndex() error {
	return s.update(func(tx *bolt.Tx) error {
		vm := s.vb(tx.Bucket(bucketMeta), "meta")
		if err := vm.Delete(keyPKeysFlat); err != nil {
			return err
		}
		return vm.Delete(keyPKeysOK)
	})
}

// putWhole makes the PKey index hold, in the batch's range of block keys,
// the batch's blocks (sealed already) and no other: those it lacks or holds
// with other entries are put, those it holds beyond them deleted. The
// blocks of a rewrite of what the index holds are those it holds already
// (blockPacker): none is written.
func (s *Store) putWhole(tx *bolt.Tx, b *Batch) error {
	if !b.inWhole {
		return nil
	}
	bk, err := tx.CreateBucketIfNotExists(bucketPKeys)
	if err != nil {
		return err
	}
	vb := s.vb(bk, "pkeys")
	n := len(b.wholeEnds)
	var upper []byte // the range's last key (nil: to the end)
	if !b.wholeToEnd {
		upper, _ = b.wholeBlock(n - 1)
	}
	// What differs is found first and changed after: a cursor is not kept
	// across changes. Keys to delete are copied (the index's own change).
	var puts []int
	var dels [][]byte
	c := vb.Cursor()
	var k, v []byte
	if len(b.wholeAfter) == 0 {
		k, v = c.First()
	} else if k, v = c.Seek(b.wholeAfter); k != nil && bytes.Equal(k, b.wholeAfter) {
		k, v = c.Next()
	}
	held, i := 0, 0
	for ; k != nil && (upper == nil || bytes.Compare(k, upper) <= 0); k, v = c.Next() {
		held++
		for ; i < n; i++ {
			if w, _ := b.wholeBlock(i); bytes.Compare(w, k) >= 0 {
				break
			}
			puts = append(puts, i)
		}
		if i < n {
			if w, wv := b.wholeBlock(i); bytes.Equal(w, k) {
				if !bytes.Equal(wv[:len(wv)-sealSize], v) {
					puts = append(puts, i) // other entries: put over it
				}
				i++
				continue
			}
		}
		dels = append(dels, slices.Clone(k))
	}
	for ; i < n; i++ {
		puts = append(puts, i)
	}
	if held == 0 && k == nil {
		bk.FillPercent = 1 // appended after every key it holds
	}
	for _, k := range dels {
		if err := vb.Delete(k); err != nil {
			return err
		}
	}
	for _, i := range puts {
		if err := vb.PutSealed(b.wholeBlock(i)); err != nil {
			return err
		}
	}
	return nil
}

// wholeBuilt marks the PKey index written whole built, in the
// transaction that put the last of its keys.
func (s *Store) wholeBuilt(tx *bolt.Tx, b *Batch) error {
	if !b.built {
		return nil
	}
	if _, err := tx.CreateBucketIfNotExists(bucketPKeys); err != nil {
		return err
	}
	vm := s.vb(tx.Bucket(bucketMeta), "meta")
	if err := vm.Delete(keyPKeysFlat); err != nil {
		return err
	}
	return vm.Put(keyPKeysOK, []byte("1"))
}

// PKeyContacts lists the contacts whose record links them to pkey (in id
// order), through the PKey index, which must be built.
func (r *Reader) PKeyContacts(pkey string) (ids []extract.ID, err error) {
	defer r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	b := r.tx.Bucket(bucketPKeys)
	if b == nil {
		return nil, nil
	}
	r.s.touched(r.tx, 1)
	prefix := append([]byte(pkey), 0)
	if r.pkeys == nil {
		// one for the view: a night asks for ten thousand PKeys
		p := r.s.packed(b, "pkeys")
		if r.pread && p.x.pv != nil {
			p.x.pv.rd = &pageReader{f: r.s.file}
		}
		r.pkeys = &p
	}
	add := func(k []byte) error {
		if len(k) != len(prefix)+16 {
			return &CorruptError{Path: r.s.path, Problem: fmt.Sprintf("the PKey index holds a key %q of the wrong length", printable(k))}
		}
		var id extract.ID
		copy(id[:], k[len(prefix):])
		ids = append(ids, id)
		return nil
	}
	// the leaf the checked descent reaches answers most (leaf.go)
	if decided, err := r.pkeys.prefixed(&r.pkeyLeaf, prefix, add); decided || err != nil {
		if err != nil {
			return nil, err
		}
		return ids, nil
	}
	ids = ids[:0]
	c := r.pkeys.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if err := add(k); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// PKeyEntry is one entry of the PKey index: a record linking contact ID
// to profile PKey (the identity rules count the input's PKeys with it).
type PKeyEntry = transform.PKeyEntry

// PKeyCount counts the records linking their contact to each PKey, for
// PKeys asked for in increasing order: a cursor walks the PKey index
// forward, so asking for every PKey of a full export reads the index once.
// Every entry it passes over (a PKey not asked for) goes to missed.
type PKeyCount struct {
	r       *Reader
	c       *pcursor
	k       []byte
	started bool
	missed  func(PKeyEntry) error
	err     error
	steps   int // entries passed, for releasing the mapping every scanEvery
}

// next moves the cursor on.
func (pc *PKeyCount) next() {
	if pc.steps++; pc.steps%scanEvery == 0 {
		pc.r.s.releaseMapping(pc.r.tx)
	}
	pc.k, _ = pc.c.Next()
}

// PKeyCounter starts a forward count over the PKey index (which must be
// built); missed hears of every entry whose PKey is not asked for.
func (r *Reader) PKeyCounter(missed func(PKeyEntry) error) *PKeyCount {
	pc := &PKeyCount{r: r, missed: missed}
	if b := r.tx.Bucket(bucketPKeys); b != nil {
		pc.c = r.s.packed(b, "pkeys").Cursor()
	}
	return pc
}

func (pc *PKeyCount) passOver() {
	if len(pc.k) < 17 || pc.k[len(pc.k)-17] != 0 {
		panic(damage{fmt.Sprintf("the PKey index holds a key %q of the wrong shape", printable(pc.k))})
	}
	var id extract.ID
	copy(id[:], pc.k[len(pc.k)-16:])
	if err := pc.missed(PKeyEntry{PKey: string(pc.k[:len(pc.k)-17]), ID: id}); err != nil && pc.err == nil {
		pc.err = err
	}
	pc.next()
}

// Count is the number of records linking their contact to pkey.
func (pc *PKeyCount) Count(pkey string) (n int, err error) {
	defer pc.r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	if pc.c == nil {
		return 0, nil
	}
	if !pc.started {
		pc.started = true
		pc.k, _ = pc.c.First()
	}
	for pc.k != nil && pkeyOrder(pc.k, pkey) < 0 {
		pc.passOver()
	}
	for pc.k != nil && pkeyOrder(pc.k, pkey) == 0 {
		n++
		pc.next()
	}
	return n, pc.err
}

// pkeyOrder compares index key k with the keys of pkey's entries (pkey,
// then 0, then a contact id): below them, among them (0), or above them.
// A count asks for a million PKeys: made into a key prefix, each was an
// allocation.
func pkeyOrder(k []byte, pkey string) int {
	if len(k) <= len(pkey) {
		if c := strings.Compare(string(k), pkey[:len(k)]); c != 0 {
			return c
		}
		return -1 // a prefix of pkey: below pkey and its 0
	}
	if c := strings.Compare(string(k[:len(pkey)]), pkey); c != 0 {
		return c
	}
	if k[len(pkey)] == 0 {
		return 0
	}
	return 1
}

// Finish ends the count: the entries past the last PKey asked for go to
// missed.
func (pc *PKeyCount) Finish() (err error) {
	if pc.c == nil {
		return nil
	}
	defer pc.r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	if !pc.started {
		pc.started = true
		pc.k, _ = pc.c.First()
	}
	for pc.k != nil {
		pc.passOver()
	}
	return pc.err
}

// EachPKey calls fn with every (PKey, contact) of the PKey index, in PKey
// order (fn returning false stops).
func (r *Reader) EachPKey(fn func(pkey string, id extract.ID) bool) (err error) {
	defer r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	b := r.tx.Bucket(bucketPKeys)
	if b == nil {
		return nil
	}
	c := r.s.packed(b, "pkeys").Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) < 17 || k[len(k)-17] != 0 {
			return &CorruptError{Path: r.s.path, Problem: fmt.Sprintf("the PKey index holds a key %q of the wrong shape", printable(k))}
		}
		var id extract.ID
		copy(id[:], k[len(k)-16:])
		if !fn(string(k[:len(k)-17]), id) {
			return nil
		}
	}
	return nil
}

// PendingContacts lists, in id order, contacts with a write not seen yet
// made by the run that started at (Unix ms; 0: not recorded), through the
// index of pending writes (which must be built); fn returning false stops.
func (r *Reader) PendingContacts(at int64, fn func(id extract.ID) bool) (err error) {
	defer r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	b := r.tx.Bucket(bucketPending)
	if b == nil {
		return nil
	}
	prefix := binary.BigEndian.AppendUint64(nil, uint64(at))
	c := r.s.packed(b, "pending").Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != 24 {
			return &CorruptError{Path: r.s.path, Problem: fmt.Sprintf("the index of pending writes holds a key %x of the wrong length", k)}
		}
		var id extract.ID
		copy(id[:], k[8:])
		if !fn(id) {
			return nil
		}
	}
	return nil
}

// VerifyIndexes compares the indexes, when built, with what a read of
// every record (and of the log) makes of them; tests call it beside
// Recount.
func (s *Store) VerifyIndexes() error {
	return s.view(func(tx *bolt.Tx) error {
		pk, pd := s.indexesBuilt(tx)
		var wantPK, wantPD [][]byte
		if b := tx.Bucket(bucketContacts); b != nil {
			if err := s.records(b).ForEach(func(k, v []byte) error {
				var id extract.ID
				copy(id[:], k)
				r, err := parseRecord(v)
				if err != nil {
					return err
				}
				key, ats, err := indexKeys(&r, id)
				if key != nil {
					wantPK = append(wantPK, key)
				}
				for _, at := range ats {
					wantPD = append(wantPD, pendingIndexKey(at, id))
				}
				return err
			}); err != nil {
				return err
			}
		}
		lg := s.logIndexed(tx)
		var wantLog [][]byte
		if b := tx.Bucket(bucketLog); b != nil && lg {
			if err := s.vb(b, "log").ForEach(func(k, v []byte) error {
				var contact extract.ID
				copy(contact[:], v)
				wantLog = append(wantLog, logIndexKey(k, contact))
				return nil
			}); err != nil {
				return err
			}
		}
		for _, old := range [][]byte{bucketLogContact, bucketLogIndex} {
			if lg && tx.Bucket(old) != nil {
				return fmt.Errorf("state %s: the log is indexed by log_index_packed, and %s is still there", s.path, old)
			}
		}
		for _, x := range []struct {
			built bool
			name  []byte
			want  [][]byte
		}{{pk, bucketPKeys, wantPK}, {pd, bucketPending, wantPD}, {lg, bucketLogPacked, wantLog}} {
			if !x.built {
				continue
			}
			slices.SortFunc(x.want, bytes.Compare)
			var got [][]byte
			if b := tx.Bucket(x.name); b != nil {
				c := s.packed(b, string(x.name)).Cursor()
				for k, _ := c.First(); k != nil; k, _ = c.Next() {
					got = append(got, slices.Clone(k))
				}
			}
			if !slices.EqualFunc(got, x.want, bytes.Equal) {
				return fmt.Errorf("state %s: the %s index holds %d entries, a read of every record makes %d (%s)", s.path, x.name, len(got), len(x.want), firstDiff(got, x.want))
			}
		}
		return nil
	})
}

func firstDiff(got, want [][]byte) string {
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			return fmt.Sprintf("missing %q", printable(want[i]))
		case i >= len(want):
			return fmt.Sprintf("extra %q", printable(got[i]))
		case !bytes.Equal(got[i], want[i]):
			return fmt.Sprintf("%q where %q belongs", printable(got[i]), printable(want[i]))
		}
	}
	return "same"
}
