package state

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// rewriteChunk bounds one transaction of a whole-file rewrite.
const rewriteChunk = 1 << 16

// rewrite passes every contact record through fn, which returns the new
// value and whether it changed, in transactions of rewriteChunk records. A
// rewrite killed half-way can simply be run again.
func (s *Store) rewrite(ctx context.Context, fn func(v []byte) ([]byte, bool, error)) (changed int, err error) {
	var from []byte
	for {
		if err := ctx.Err(); err != nil {
			return changed, err
		}
		done := false
		err := s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketContacts)
			if b == nil {
				done = true
				return nil
			}
			// Records are rewritten in the current layout.
			if err := s.persist(tx); err != nil {
				return err
			}
			tot, _, err := s.loadCounts(tx)
			if err != nil {
				return err
			}
			type put struct{ k, old, v []byte }
			var puts []put
			vb := s.records(b)
			c := vb.Cursor()
			k, v := c.Seek(from)
			if from != nil && bytes.Equal(k, from) {
				k, v = c.Next()
			}
			n := 0
			for ; k != nil && n < rewriteChunk; k, v = c.Next() {
				nv, ok, err := fn(v)
				if err != nil {
					return fmt.Errorf("contact %x: %w", k, err)
				}
				if ok {
					puts = append(puts, put{append([]byte{}, k...), v, nv})
				}
				from = append(from[:0], k...)
				n++
			}
			done = k == nil
			var ops indexOps
			writes := make([]blockOp, 0, len(puts))
			for _, p := range puts {
				old := p.old
				if err := tot.change(old, p.v); err != nil {
					return fmt.Errorf("contact %x: %w", p.k, err)
				}
				var id extract.ID
				copy(id[:], p.k)
				if err := ops.changeValues(id, old, p.v); err != nil {
					return fmt.Errorf("contact %x: %w", p.k, err)
				}
				writes = append(writes, blockOp{k: p.k, v: p.v, put: true})
			}
			if err := vb.apply(writes); err != nil {
				return err
			}
			changed += len(puts)
			if err := s.applyIndex(tx, &ops); err != nil {
				return err
			}
			return s.storeCounts(tx, tot)
		})
		if err != nil {
			return changed, fmt.Errorf("state %s: %w", s.path, err)
		}
		s.persisted()
		if done {
			return changed, nil
		}
	}
}

// Reset forgets the agreed snapshot of the given pairs (every configured
// pair when pairs is empty), so that the next run decides them as at first
// sight. Values last read and writes not yet seen are kept: they are facts
// about the systems, not agreements.
func (s *Store) Reset(ctx context.Context, pairs []transform.Pair) (int, error) {
	ids := map[byte]bool{}
	if len(pairs) == 0 {
		for _, id := range s.pairIDs {
			ids[id] = true
		}
	}
	reg, err := s.registry()
	if err != nil {
		return 0, err
	}
	for _, p := range pairs {
		if id, ok := reg[string(pairKey(p))]; ok {
			ids[id] = true
		}
	}
	return s.rewrite(ctx, func(v []byte) ([]byte, bool, error) {
		r, err := parseRecord(v)
		if err != nil {
			return nil, false, err
		}
		var pairs []pairEntry
		changed := false
		err = r.eachPair(func(e pairEntry) {
			if ids[e.id] && e.flags&3 != 0 {
				e.flags &^= 3 // S is the low two bits
				changed = true
			}
			pairs = append(pairs, e)
		})
		if err != nil || !changed {
			return nil, false, err
		}
		return appendRecord(nil, r, pairs), true, nil
	})
}

// Unmapped lists the registered pairs that are not configured: mappings
// removed whose snapshots DropUnmapped has not dropped yet.
func (s *Store) Unmapped(configured []transform.Pair) ([]transform.Pair, error) {
	reg, err := s.registry()
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, p := range configured {
		keep[string(pairKey(p))] = true
	}
	var out []transform.Pair
	for k := range reg {
		if !keep[k] {
			out = append(out, parsePairKey(k))
		}
	}
	slices.SortFunc(out, func(a, b transform.Pair) int { return strings.Compare(pairName(a), pairName(b)) })
	return out, nil
}

func pairName(p transform.Pair) string { return string(pairKey(p)) }

// DropUnmapped deletes the snapshots of every registered pair that is not
// among the configured ones, then forgets those pairs, so that a mapping
// added back later starts from first sight. It returns the dropped pairs.
// A run calls it after its commit: a run that stops keeps them.
func (s *Store) DropUnmapped(ctx context.Context, configured []transform.Pair) ([]transform.Pair, error) {
	reg, err := s.registry()
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, p := range configured {
		keep[string(pairKey(p))] = true
	}
	drop := map[byte]bool{}
	var dropped []transform.Pair
	for k, id := range reg {
		if !keep[k] {
			drop[id] = true
			dropped = append(dropped, parsePairKey(k))
		}
	}
	if len(drop) == 0 {
		return nil, nil
	}
	if _, err := s.rewrite(ctx, func(v []byte) ([]byte, bool, error) {
		r, err := parseRecord(v)
		if err != nil {
			return nil, false, err
		}
		var kept []pairEntry
		err = r.eachPair(func(e pairEntry) {
			if !drop[e.id] {
				kept = append(kept, e)
			}
		})
		if err != nil || len(kept) == r.count {
			return nil, false, err
		}
		return appendRecord(nil, r, kept), true, nil
	}); err != nil {
		return nil, err
	}
	// Only now may the ids be freed: a drop killed before this point is
	// simply done again by the next run.
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta).Bucket(bucketPairs)
		for k := range reg {
			if !keep[k] {
				if err := b.Delete([]byte(k)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: forgetting dropped mappings: %w", s.path, err)
	}
	for id := range drop {
		delete(s.unmapped, id)
	}
	return dropped, nil
}

func (s *Store) registry() (map[string]byte, error) {
	reg := map[string]byte{}
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || meta.Bucket(bucketPairs) == nil {
			return nil
		}
		return s.vb(meta.Bucket(bucketPairs), "pairs").ForEach(func(k, v []byte) error {
			if len(v) == 1 {
				reg[string(k)] = v[0]
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: mappings: %w", s.path, err)
	}
	return reg, nil
}

func parsePairKey(k string) transform.Pair {
	parts := bytes.Split([]byte(k), []byte{0x1f})
	p := transform.Pair{}
	if len(parts) == 3 {
		p.D365, p.Campaign, p.Invert = string(parts[0]), string(parts[1]), string(parts[2]) == "1"
	}
	return p
}

// Each calls fn for every contact's snapshot, in id order.
func (s *Store) Each(fn func(id extract.ID, snap *transform.Snapshot) error) error {
	return s.EachAgreed(func(id extract.ID, snap *transform.Snapshot, _ *Agreed) error { return fn(id, snap) })
}

// EachAgreed is Each with when each agreement was reached.
func (s *Store) EachAgreed(fn func(id extract.ID, snap *transform.Snapshot, agreed *Agreed) error) error {
	slot := s.slots()
	return s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContacts)
		if b == nil {
			return nil
		}
		var snap transform.Snapshot
		return s.records(b).ForEach(func(k, v []byte) error {
			var id extract.ID
			copy(id[:], k)
			r, err := parseRecord(v)
			if err == nil {
				err = s.decodeRecord(&r, &snap, slot)
			}
			if err != nil {
				return fmt.Errorf("state %s: contact %s: %w", s.path, id, err)
			}
			a := s.agreed(&r)
			return fn(id, &snap, &a)
		})
	})
}
