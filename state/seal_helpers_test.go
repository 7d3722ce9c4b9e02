package state

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

// unsealAll makes a sealed file look as a build from before the seals
// wrote it: every value bare, one key per contact record (schema 8 and
// before), the schema the given number.
func unsealAll(t *testing.T, st *Store, schema string) {
	t.Helper()
	flatten(t, st)
	if err := st.db.Update(func(tx *bolt.Tx) error {
		var walk func(b *bolt.Bucket, name string) error
		walk = func(b *bolt.Bucket, name string) error {
			type kv struct{ k, v []byte }
			var vals []kv
			var subs [][]byte
			if err := b.ForEach(func(k, v []byte) error {
				if v == nil && b.Bucket(k) != nil {
					subs = append(subs, append([]byte{}, k...))
					return nil
				}
				p, err := unseal(name, k, v)
				if err != nil {
					return err
				}
				vals = append(vals, kv{append([]byte{}, k...), append([]byte{}, p...)})
				return nil
			}); err != nil {
				return err
			}
			for _, e := range vals {
				if err := b.Put(e.k, e.v); err != nil {
					return err
				}
			}
			for _, k := range subs {
				if err := walk(b.Bucket(k), string(k)); err != nil {
					return err
				}
			}
			return nil
		}
		if err := tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(b, string(name)) }); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(schema))
	}); err != nil {
		t.Fatal(err)
	}
	st.sealed = false
}

// flatten puts the contact records of a packed file one to a key, each
// sealed, as schema 8 and before keep them.
func flatten(t *testing.T, st *Store) {
	t.Helper()
	if st.flatRecords {
		return
	}
	if err := st.db.Update(func(tx *bolt.Tx) error {
		type kv struct{ k, v []byte }
		var recs []kv
		if err := st.records(tx.Bucket(bucketContacts)).ForEach(func(k, v []byte) error {
			recs = append(recs, kv{append([]byte{}, k...), append([]byte{}, v...)})
			return nil
		}); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketContacts); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketContacts)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := b.Put(r.k, sealed(r.k, r.v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.flatRecords = true
}

// schemaOf reads the schema a store's file holds.
func schemaOf(t *testing.T, st *Store) (n int, sealed bool) {
	t.Helper()
	if err := st.db.View(func(tx *bolt.Tx) error {
		var err error
		n, sealed, err = readSchema(tx.Bucket(bucketMeta).Get(keySchema))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n, sealed
}
