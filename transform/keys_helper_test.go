package transform

import "optsync/extract"

// The tests' rows name their PKeys in testKeys (the tests of this package
// run one at a time).
var (
	testKeys = extract.NewKeys()
	testKeyW = testKeys.Writer()
)

// pk names pkey in testKeys.
func pk(pkey string) extract.Key { return testKeyW.Put(pkey) }

// pkOf is the PKey k names in testKeys.
func pkOf(k extract.Key) string { return testKeys.Get(k) }
