package state

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// sealChunk bounds one transaction of the copy: bbolt holds a write
// transaction's pages in memory.
const sealChunk = 32 << 20

// sealWhole brings a file from before the seals (schema 1 to 4) or from
// before the packed records (schema 5 to 8) to the current schema: it
// copies every bucket and value into a new file beside it, each value
// sealed, the contact records packed in blocks (packed.go), and renames
// the copy into the old one's place — so a migration killed half-way
// leaves the old file as it was, and a file is never part sealed or part
// packed. Records keep their own layout (the record versions still read);
// nothing but the seals, the blocks and the schema changes. src is the
// file open for writing, which only this run may have.
func (s *Store) sealWhole(real string) error {
	tmp := real + ".sealing"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state %s: sealing it: %w", s.path, err)
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{
		FreelistType: bolt.FreelistMapType,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			return openFile(name, flag|os.O_EXCL, mode, false)
		},
	})
	if err != nil {
		return fmt.Errorf("state %s: sealing it into %s: %w", s.path, tmp, err)
	}
	err = copySealed(s.db, dst, s.releaseMapping)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// The copy starts its transactions again from the first: the
		// record of the old file's last commit would say the new one is
		// behind it (againstRecord). Gone first, it says nothing until
		// this run's open records the new file's.
		err = os.Remove(s.path + committedSuffix)
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		err = os.Rename(tmp, real)
	}
	if err == nil {
		err = syncDir(filepath.Dir(real))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state %s: sealing it (the file is unchanged): %w", s.path, err)
	}
	return nil
}

// copySealed copies every bucket of src into dst, values sealed (a value
// sealed already is checked and sealed again), the contact records packed,
// the schema record written as the current one. release, called every
// scanEvery values, lets go of the source's pages read (a copy of a large
// file would otherwise hold all of it in the resident set).
func copySealed(src, dst *bolt.DB, release func(*bolt.Tx)) error {
	n := 0
	return src.View(func(stx *bolt.Tx) error {
		var srcSealed bool
		if meta := stx.Bucket(bucketMeta); meta != nil {
			var err error
			if _, srcSealed, err = readSchema(meta.Get(keySchema)); err != nil {
				return err
			}
		}
		c, err := newFileCopy(dst, sealChunk, 1) // written in key order
		defer c.rollback()
		if err != nil {
			return err
		}
		var walk func(path [][]byte, sb *bolt.Bucket) error
		walk = func(path [][]byte, sb *bolt.Bucket) error {
			if _, err := c.bucket(path); err != nil {
				return err
			}
			name := string(path[len(path)-1])
			records := len(path) == 1 && bytes.Equal(path[0], bucketContacts)
			// the records' blocks go to the transaction open when each
			// is full
			pack := blockPacker{emit: func(bk, entries []byte) error {
				return c.put(path, bk, sealed(bk, entries))
			}}
			err := sb.ForEach(func(k, v []byte) error {
				if n++; n%scanEvery == 0 {
					release(stx)
				}
				if v == nil {
					if child := sb.Bucket(k); child != nil {
						return walk(append(path[:len(path):len(path)], k), child)
					}
				}
				if len(path) == 1 && bytes.Equal(path[0], bucketMeta) && bytes.Equal(k, keySchema) {
					v = []byte(strconv.Itoa(SchemaVersion))
				} else if srcSealed {
					p, err := unseal(name, k, v)
					if err != nil {
						return err
					}
					v = p
				}
				if records {
					return pack.add(k, v)
				}
				return c.put(path, k, sealed(k, v))
			})
			if err != nil {
				return err
			}
			return pack.flush()
		}
		if err := stx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk([][]byte{name}, b)
		}); err != nil {
			return err
		}
		return c.commit()
	})
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
