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

// sealWhole brings a file from before the seals (schema 1 to 4) to schema
// 5: it copies every bucket and value into a new file beside it, each
// value sealed, and renames the copy into the old one's place — so a
// migration killed half-way leaves the old file as it was, and a file is
// never part sealed. Records keep their own layout (the record versions
// still read); nothing but the seals and the schema changes. src is the
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
	err = copySealed(s.db, dst)
	if cerr := dst.Close(); err == nil {
		err = cerr
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

// copySealed copies every bucket of src into dst, values sealed, the
// schema record written as 5.
func copySealed(src, dst *bolt.DB) error {
	return src.View(func(stx *bolt.Tx) error {
		dtx, err := dst.Begin(true)
		if err != nil {
			return err
		}
		defer func() { _ = dtx.Rollback() }()
		size := 0
		// bucket creates a bucket path in the current write transaction.
		bucket := func(path [][]byte) (*bolt.Bucket, error) {
			b, err := dtx.CreateBucketIfNotExists(path[0])
			for _, name := range path[1:] {
				if err != nil {
					break
				}
				b, err = b.CreateBucketIfNotExists(name)
			}
			if err == nil {
				b.FillPercent = 1 // written in key order
			}
			return b, err
		}
		var walk func(path [][]byte, sb *bolt.Bucket) error
		walk = func(path [][]byte, sb *bolt.Bucket) error {
			if _, err := bucket(path); err != nil {
				return err
			}
			return sb.ForEach(func(k, v []byte) error {
				if v == nil {
					if child := sb.Bucket(k); child != nil {
						return walk(append(path[:len(path):len(path)], k), child)
					}
				}
				if size > sealChunk {
					if err := dtx.Commit(); err != nil {
						return err
					}
					if dtx, err = dst.Begin(true); err != nil {
						return err
					}
					size = 0
				}
				db, err := bucket(path)
				if err != nil {
					return err
				}
				if len(path) == 1 && bytes.Equal(path[0], bucketMeta) && bytes.Equal(k, keySchema) {
					v = []byte(strconv.Itoa(SchemaVersion))
				}
				sv := sealed(k, v)
				size += len(k) + len(sv)
				return db.Put(k, sv)
			})
		}
		if err := stx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk([][]byte{name}, b)
		}); err != nil {
			return err
		}
		return dtx.Commit()
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
