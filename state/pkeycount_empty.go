package state

import "runtime/debug"

// Empty says the PKey index holds no entry (a first backfill's state):
// every Count is 0 and no entry is missed, so the count need not be asked
// for each PKey of the input, in PKey order. False when it cannot tell (a
// damaged page): the count then runs, and tells of the damage itself.
func (pc *PKeyCount) Empty() bool {
	if pc.c == nil {
		return true
	}
	var err error
	empty := false
	func() {
		defer pc.r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
		k, _ := pc.c.First()
		empty = k == nil
	}()
	return empty && err == nil
}
