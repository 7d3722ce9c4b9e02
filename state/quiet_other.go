//go:build !linux

package state

// quietFaults is Linux's (quiet_linux.go): elsewhere the mapping keeps
// fault-around, and a night the smaller transactions.
type quietFaults struct{}

func (q *quietFaults) begin(uintptr) (bool, error)       { return false, nil }
func (q *quietFaults) follow(uintptr) error              { return nil }
func (q *quietFaults) end()                              {}
func (q *quietFaults) populate([]byte, uint64, []uint64) {}
func (q *quietFaults) populating() bool                  { return false }
