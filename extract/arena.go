package extract

import (
	"strings"
	"unsafe"
)

// keyArena copies the short strings a reader keeps of each row (a
// profile's PKey) into shared blocks, one allocation per block instead of
// one per row: a million PKeys were a million objects for the collector
// to find, mark and sweep, and a malloc each. A block lives while any of
// its strings does, so what outlives the rows (a reject's id) is copied on
// its own (strings.Clone), not taken from here.
type keyArena struct {
	block []byte
}

// arenaBlock is a block's size: small beside what a sorter holds, large
// beside a PKey.
const arenaBlock = 32 << 10

// clone returns a copy of s that no later write touches.
func (a *keyArena) clone(s string) string {
	if len(s) == 0 {
		return ""
	}
	if len(s) > arenaBlock/16 {
		return strings.Clone(s)
	}
	if len(a.block)+len(s) > cap(a.block) {
		a.block = make([]byte, 0, arenaBlock)
	}
	n := len(a.block)
	a.block = append(a.block, s...)
	return unsafe.String(&a.block[n], len(s))
}
