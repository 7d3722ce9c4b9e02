package state

import (
	"encoding/binary"
	"errors"
	"fmt"

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
}

var keyCounts = []byte("counts")

const countsVersion = 1

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
	}
	_, err := r.walk(func(e pairEntry) {
		if pairState(e.flags).KnownOptOut(dSeen, cSeen) {
			c.optOuts[e.id] += sign
		}
	})
	return err
}

// addSnapshot adds a snapshot as encode stores it: its configured pairs.
func (c *counts) addSnapshot(snap *transform.Snapshot, pairIDs []byte, sign int64) {
	if snap.DSeen {
		c.d365 += sign
	}
	if snap.CSeen {
		c.campaign += sign
	}
	for i, id := range pairIDs {
		if snap.Pairs[i].KnownOptOut(snap.DSeen, snap.CSeen) {
			c.optOuts[id] += sign
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
	for i, n := range d.optOuts {
		c.optOuts[i] += n
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
	if len(v) < 1 || v[0] != countsVersion {
		return nil, false, errCounts
	}
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
	err := s.vb(b, "contacts").ForEach(func(k, v []byte) error {
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
	t := Totals{D365: int(c.d365), Campaign: int(c.campaign), OptOuts: make([]int, len(s.pairIDs))}
	for i, id := range s.pairIDs {
		if id != 0 {
			t.OptOuts[i] = int(c.optOuts[id])
		}
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
