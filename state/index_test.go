package state

import (
	"bytes"
	"testing"
)

// pkeyOrder places an index key as the key prefix it replaced did (pkey,
// then 0): below (bytes.Compare), among its entries (a prefix), or above,
// for every key and PKey of a small alphabet up to four bytes.
func TestPKeyOrderAsThePrefix(t *testing.T) {
	alphabet := []byte{0, 1, 'a', 'b'}
	var all [][]byte
	var grow func(b []byte)
	grow = func(b []byte) {
		all = append(all, b)
		if len(b) == 4 {
			return
		}
		for _, c := range alphabet {
			grow(append(bytes.Clone(b), c))
		}
	}
	grow(nil)
	for _, pk := range all {
		prefix := append(bytes.Clone(pk), 0)
		for _, k := range all {
			want := 1
			switch {
			case bytes.Compare(k, prefix) < 0:
				want = -1
			case bytes.HasPrefix(k, prefix):
				want = 0
			}
			if got := pkeyOrder(k, string(pk)); got != want {
				t.Fatalf("pkeyOrder(%q, %q) = %d, want %d", k, pk, got, want)
			}
		}
	}
}
