package state

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// Until reads the records ahead of the decider: damage stops a walk where
// the walk itself met it. A record that does not decode is the error of
// the first call that asks for it or for a contact after it, never of one
// before; a damaged block (its seal), of the first call that must step
// past the last record before it. The records before the damage are handed
// as they are, each once, in order; a Reader closed in the middle of the
// walk (the run stopped) lets go of its view.
func TestReaderUntilStopsAtDamage(t *testing.T) {
	const bad = 1500
	var ns []int
	for n := 0; n < 3000; n += 3 {
		ns = append(ns, n)
	}
	pairs := []transform.Pair{testPairs[0], testPairs[1], phonePair}
	cases := []struct {
		name   string
		damage func(t *testing.T, st *Store) (lastGood int, says string)
	}{
		{"a record that does not decode", func(t *testing.T, st *Store) (int, string) {
			k := id(bad)
			if err := st.db.Update(func(tx *bolt.Tx) error {
				return st.records(tx.Bucket(bucketContacts)).apply([]blockOp{{k: k[:], v: []byte{99, 0}, put: true}})
			}); err != nil {
				t.Fatal(err)
			}
			return bad - 1, "record version 99 unknown"
		}},
		{"a block whose seal does not match", func(t *testing.T, st *Store) (int, string) {
			var first int
			k := id(bad)
			if err := st.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketContacts)
				c := b.Cursor()
				bk, v := c.Seek(k[:])
				if !bytes.Equal(bk, k[:]) {
					bk, v = c.Prev()
				}
				first = int(bk[14])<<8 | int(bk[15])
				v = bytes.Clone(v)
				v[len(v)/2] ^= 0x10
				return b.Put(bytes.Clone(bk), v)
			}); err != nil {
				t.Fatal(err)
			}
			if first == 0 {
				t.Fatalf("the damaged block is the first: nothing is read before it")
			}
			return first - 3, "checksum"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := openWith(t, filepath.Join(t.TempDir(), "state.db"), pairs, ns...)
			defer st.Close()
			lastGood, says := tc.damage(t, st)
			for _, step := range []int{1, 2, 5, 700} {
				r, err := st.Reader()
				if err != nil {
					t.Fatal(err)
				}
				var seen []int
				absent := seenFull(t, &seen)
				stopped := -1
				for n := 0; n < 3100; n += step {
					var got transform.Snapshot
					ok, err := r.Until(ptr(id(n)), &got, absent)
					if err != nil {
						var ce *CorruptError
						if !errors.As(err, &ce) || !strings.Contains(err.Error(), says) {
							t.Fatalf("step %d: Until(%d): %v, want a damaged state saying %q", step, n, err, says)
						}
						stopped = n
						break
					}
					if ok != (n%3 == 0) || ok && got != fullSnap(n) {
						t.Fatalf("step %d: Until(%d) = %v %+v", step, n, ok, got)
					}
					if ok {
						seen = append(seen, n)
					}
				}
				// the first call asking for a contact past the last good one
				want := (lastGood/step + 1) * step
				if stopped != want {
					t.Fatalf("step %d: the walk stopped at Until(%d), want Until(%d)", step, stopped, want)
				}
				var before []int
				for _, n := range ns {
					if n <= lastGood && n < stopped {
						before = append(before, n)
					}
				}
				if !equalInts(seen, before) {
					t.Fatalf("step %d: handed %v, want %v", step, seen, before)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// A Reader closed (or left open, and closed with the store) in the
// middle of a walk stops reading ahead before the view ends.
func TestReaderClosedMidWalk(t *testing.T) {
	var ns []int
	for n := 0; n < 3000; n++ {
		ns = append(ns, n)
	}
	st := openWith(t, filepath.Join(t.TempDir(), "state.db"), testPairs, ns...)
	for _, leave := range []bool{false, true} {
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		var got transform.Snapshot
		if ok, err := r.Until(ptr(id(10)), &got, func(extract.ID, *transform.Snapshot) error { return nil }); !ok || err != nil {
			t.Fatalf("Until(10) = %v %v", ok, err)
		}
		if !leave {
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
