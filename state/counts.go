package state

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// counts are totals over every contact record, kept under the meta key
// "counts" and changed in the same transaction as the records they count,
// so that a run killed at any point leaves them true. The safety limits
// need them: safety.max_optin is a share of the opt-outs state knows, and
// safety.max_missing a share of the records it knows on each side. Keeping
// them makes those shares cost nothing per run, however large the state.
type counts struct {
	d365, campaign int64 // records whose Dynamics / Campaign side was read
	// optOuts are the known opt-outs per stored pair id (see
	// transform.PairState.KnownOptOut).
	optOuts [256]int64
	// pkeyed counts the records that link their contact to a profile
	// (Campaign side read, a PKey): the profiles state knows (version 2).
	pkeyed int64
	// pending counts the writes not seen yet, by the run that wrote them,
	// pair and side (version 2).
	pending map[pendKey]int64
	// v1: read from a record of version 1, which had neither.
	v1 bool
}

// pendKey is a group of pending writes: the start of the run that wrote
// them (Unix ms; 0: not recorded), the stored pair id and the side written
// (0 Dynamics, 1 Campaign).
type pendKey struct {
	at   int64
	pair byte
	side byte
}

var keyCounts = []byte("counts")

const countsVersion = 2

// add adds (sign 1) or takes away (sign -1) one stored record.
func (c *counts) add(v []byte, sign int64) error {
	r, err := parseRecord(v)
	if err != nil {
		return err
	}
	return c.addRecord(&r, sign)
}

// addRecord is add for a record parsed already.
func (c *counts) addRecord(r *record, sign int64) error {
	dSeen, cSeen := r.flags&1 != 0, r.flags&2 != 0
	if dSeen {
		c.d365 += sign
	}
	if cSeen {
		c.campaign += sign
		if len(r.pkey) > 0 {
			c.pkeyed += sign
		}
	}
	_, err := r.walk(func(e pairEntry) {
		if pairState(e.flags).KnownOptOut(dSeen, cSeen) {
			c.optOuts[e.id] += sign
		}
		if e.flags>>6&3 != 0 {
			c.addPending(pendKey{at: e.dWrittenAt, pair: e.id, side: 0}, sign)
		}
		if e.flags>>8&3 != 0 {
			c.addPending(pendKey{at: e.cWrittenAt, pair: e.id, side: 1}, sign)
		}
	})
	return err
}

func (c *counts) addPending(k pendKey, sign int64) {
	if c.pending == nil {
		c.pending = map[pendKey]int64{}
	}
	if c.pending[k] += sign; c.pending[k] == 0 {
		delete(c.pending, k)
	}
}

// addSnapshot adds a snapshot as encode stores it: its configured pairs.
func (c *counts) addSnapshot(snap *transform.Snapshot, pairIDs []byte, sign int64) {
	if snap.DSeen {
		c.d365 += sign
	}
	if snap.CSeen {
		c.campaign += sign
		if snap.PKey != "" {
			c.pkeyed += sign
		}
	}
	for i, id := range pairIDs {
		ps := &snap.Pairs[i]
		if ps.KnownOptOut(snap.DSeen, snap.CSeen) {
			c.optOuts[id] += sign
		}
		if ps.DWritten.Known() {
			c.addPending(pendKey{at: max(ps.DWrittenAt, 0), pair: id, side: 0}, sign)
		}
		if ps.CWritten.Known() {
			c.addPending(pendKey{at: max(ps.CWrittenAt, 0), pair: id, side: 1}, sign)
		}
	}
}

// change accounts for a record replaced: old may be nil (a new record),
// new may be nil (a record deleted).
func (c *counts) change(old, new []byte) error {
	if old != nil {
		if err := c.add(old, -1); err != nil {
			return err
		}
	}
	if new != nil {
		return c.add(new, 1)
	}
	return nil
}

func (c *counts) merge(d *counts) {
	c.d365 += d.d365
	c.campaign += d.campaign
	c.pkeyed += d.pkeyed
	for i, n := range d.optOuts {
		c.optOuts[i] += n
	}
	for k, n := range d.pending {
		c.addPending(k, n)
	}
}

// pairState unpacks a pair entry's flags.
func pairState(f uint16) transform.PairState {
	return transform.PairState{S: extract.Tri(f & 3), DRaw: extract.Tri(f >> 2 & 3), CRaw: extract.Tri(f >> 4 & 3),
		DWritten: extract.Tri(f >> 6 & 3), CWritten: extract.Tri(f >> 8 & 3)}
}

var errCounts = errors.New("stored totals malformed")

// loadCounts reads the stored totals; ok is false when the file has none
// yet (written before they were kept).
func (s *Store) loadCounts(tx *bolt.Tx) (c *counts, ok bool, err error) {
	c = &counts{}
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return c, false, nil
	}
	v := s.vb(meta, "meta").Get(keyCounts)
	if v == nil {
		return c, false, nil
	}
	if len(v) < 1 || v[0] < 1 || v[0] > countsVersion {
		return nil, false, errCounts
	}
	version := v[0]
	c.v1 = version == 1
	v = v[1:]
	next := func() (int64, bool) {
		x, n := binary.Varint(v)
		if n <= 0 {
			return 0, false
		}
		v = v[n:]
		return x, true
	}
	var okD, okC bool
	c.d365, okD = next()
	c.campaign, okC = next()
	if !okD || !okC {
		return nil, false, errCounts
	}
	if version >= 2 {
		var ok bool
		if c.pkeyed, ok = next(); !ok {
			return nil, false, errCounts
		}
		n, ok := next()
		for ; ok && n > 0; n-- {
			var k pendKey
			var x int64
			if k.at, ok = next(); !ok || len(v) < 2 {
				return nil, false, errCounts
			}
			k.pair, k.side, v = v[0], v[1], v[2:]
			if x, ok = next(); !ok {
				return nil, false, errCounts
			}
			c.addPending(k, x)
		}
		if !ok {
			return nil, false, errCounts
		}
	}
	for len(v) > 0 {
		id := v[0]
		v = v[1:]
		x, ok := next()
		if !ok {
			return nil, false, errCounts
		}
		c.optOuts[id] = x
	}
	return c, true, nil
}

func (s *Store) storeCounts(tx *bolt.Tx, c *counts) error {
	b := []byte{countsVersion}
	b = binary.AppendVarint(b, c.d365)
	b = binary.AppendVarint(b, c.campaign)
	b = binary.AppendVarint(b, c.pkeyed)
	keys := slices.SortedFunc(maps.Keys(c.pending), func(x, y pendKey) int {
		return cmp.Or(cmp.Compare(x.at, y.at), cmp.Compare(x.pair, y.pair), cmp.Compare(x.side, y.side))
	})
	b = binary.AppendVarint(b, int64(len(keys)))
	for _, k := range keys {
		b = binary.AppendVarint(b, k.at)
		b = append(b, k.pair, k.side)
		b = binary.AppendVarint(b, c.pending[k])
	}
	for id, n := range c.optOuts {
		if n != 0 {
			b = append(b, byte(id))
			b = binary.AppendVarint(b, n)
		}
	}
	return s.vb(tx.Bucket(bucketMeta), "meta").Put(keyCounts, b)
}

// recount counts every record: once for a file from before the totals
// were kept, and in tests to check them.
func (s *Store) recount(tx *bolt.Tx) (*counts, error) {
	c := &counts{}
	b := tx.Bucket(bucketContacts)
	if b == nil {
		return c, nil
	}
	n := 0
	err := s.records(b).ForEach(func(k, v []byte) error {
		if n++; n%scanEvery == 0 {
			s.releaseMapping(tx)
		}
		if err := c.add(v, 1); err != nil {
			return fmt.Errorf("contact %x: %w", k, err)
		}
		return nil
	})
	return c, err
}

// Totals is what state knows in all, before the run that asks.
type Totals struct {
	D365     int // contacts whose Dynamics side state has read
	Campaign int // contacts whose Campaign profile state has read
	// OptOuts are the known opt-outs per configured pair: agreed opted out,
	// or, with no agreement, opted out on a side as last read.
	OptOuts []int
	// Profiles counts the records linking their contact to a profile (a
	// PKey): the profiles state knows.
	Profiles int
	// Pending are the writes not seen yet in an export, by the start of the
	// run that wrote them (Unix ms; 0: not recorded), per configured pair:
	// [0] to Dynamics, [1] to Campaign. PendingKnown is false for a file
	// whose totals are from before they were kept (a reader counts them
	// itself).
	Pending      map[int64][][2]int
	PendingKnown bool
}

// OptOutSum is the known opt-outs of every configured pair.
func (t Totals) OptOutSum() int {
	n := 0
	for _, x := range t.OptOuts {
		n += x
	}
	return n
}

func (s *Store) totals(c *counts) Totals {
	t := Totals{D365: int(c.d365), Campaign: int(c.campaign), OptOuts: make([]int, len(s.pairIDs)),
		Profiles: int(c.pkeyed), PendingKnown: !c.v1, Pending: map[int64][][2]int{}}
	for i, id := range s.pairIDs {
		if id != 0 {
			t.OptOuts[i] = int(c.optOuts[id])
		}
	}
	slot := s.slots()
	for k, n := range c.pending {
		i := slot[k.pair]
		if i < 0 || n == 0 {
			continue // a mapping no longer configured
		}
		g := t.Pending[k.at]
		if g == nil {
			g = make([][2]int, len(s.pairIDs))
			t.Pending[k.at] = g
		}
		g[i][k.side] += int(n)
	}
	return t
}

// Totals reads the kept totals (counting them, read-only, in a file from
// before they were kept).
func (s *Store) Totals() (Totals, error) {
	var t Totals
	err := s.view(func(tx *bolt.Tx) error {
		c, ok, err := s.loadCounts(tx)
		if err == nil && !ok {
			c, err = s.recount(tx)
		}
		if err != nil {
			return err
		}
		t = s.totals(c)
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("state %s: totals: %w", s.path, err)
	}
	return t, nil
}

// Recount counts every record afresh; the kept totals must equal it.
func (s *Store) Recount() (Totals, error) {
	var t Totals
	err := s.view(func(tx *bolt.Tx) error {
		c, err := s.recount(tx)
		if err != nil {
			return err
		}
		t = s.totals(c)
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("state %s: recount: %w", s.path, err)
	}
	return t, nil
}
