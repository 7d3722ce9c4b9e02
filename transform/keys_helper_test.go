package transform

import "optsync/extract"

// testKeys is one test's table of the PKeys its rows name: a table of its
// own, so that no test shares state with another.
type testKeys struct {
	ks *extract.Keys
	w  *extract.KeyWriter
}

func newTestKeys() testKeys {
	ks := extract.NewKeys()
	return testKeys{ks: ks, w: ks.Writer()}
}

// pk names pkey in the table.
func (tk testKeys) pk(pkey string) extract.Key { return tk.w.Put(pkey) }

// pkOf is the PKey k names in the table.
func (tk testKeys) pkOf(k extract.Key) string { return tk.ks.Get(k) }
