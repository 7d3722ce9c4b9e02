package state

import (
	bolt "go.etcd.io/bbolt"
)

// fileCopy is the writing side of a copy of a whole state file (a
// migration's, a compact's): puts go to one write transaction, committed
// and begun again once it holds about limit bytes, since bbolt holds a
// write transaction's pages in memory until it commits.
type fileCopy struct {
	dst   *bolt.DB
	tx    *bolt.Tx
	limit int
	fill  float64 // the buckets' FillPercent
	// held are the keys and values put in tx, copied: bbolt keeps them
	// until the commit, which read them again out of the source's mapping
	// (released since: each such page faulted in with up to 15 around it,
	// a 10 M compact peaked at 584 MB).
	held []byte
	size int // bytes put in tx
}

func newFileCopy(dst *bolt.DB, limit int, fill float64) (*fileCopy, error) {
	c := &fileCopy{dst: dst, limit: limit, fill: fill}
	return c, c.begin()
}

func (c *fileCopy) begin() error {
	tx, err := c.dst.Begin(true)
	c.tx, c.held, c.size = tx, nil, 0
	return err
}

// bucket is the bucket at path in the transaction open now, created as
// needed.
func (c *fileCopy) bucket(path [][]byte) (*bolt.Bucket, error) {
	b, err := c.tx.CreateBucketIfNotExists(path[0])
	for _, name := range path[1:] {
		if err != nil {
			break
		}
		b, err = b.CreateBucketIfNotExists(name)
	}
	if err == nil {
		b.FillPercent = c.fill
	}
	return b, err
}

// put puts k and v (copied) in the bucket at path, first committing the
// transaction open when it holds limit bytes already.
func (c *fileCopy) put(path [][]byte, k, v []byte) error {
	if c.size > c.limit {
		if err := c.commit(); err != nil {
			return err
		}
		if err := c.begin(); err != nil {
			return err
		}
	}
	b, err := c.bucket(path)
	if err != nil {
		return err
	}
	if cap(c.held)-len(c.held) < len(k)+len(v) {
		// a new buffer: the last one's bytes are put already
		c.held = make([]byte, 0, max(c.limit+c.limit/8, len(k)+len(v)))
	}
	c.size += len(k) + len(v)
	at := len(c.held)
	c.held = append(append(c.held, k...), v...)
	return b.Put(c.held[at:at+len(k):at+len(k)], c.held[at+len(k):len(c.held):len(c.held)])
}

func (c *fileCopy) commit() error { return c.tx.Commit() }

// rollback ends a transaction left open by a copy that failed.
func (c *fileCopy) rollback() {
	if c.tx != nil {
		_ = c.tx.Rollback()
	}
}
