package spill

// Budgets divide a run's memory budget (memory_budget) between the sorts
// and sets it holds at once. What stays out of it: the process itself,
// buffers, the garbage collector's headroom (GOGC 40: the heap may grow
// 40 % past what is live) and the state file's pages as a commit writes
// them.
type Budgets struct {
	// Contacts and Profiles hold the rows read, both sides at once.
	Contacts, Profiles int64
	// ByContact holds the profiles sorted again by contact while the
	// contacts wait.
	ByContact int64
	Rejects   int64
	// Dirty and PKeys are the decisions' pass: what the commit decides
	// again, and the PKey index of a backfill, beside the rows read back.
	Dirty, PKeys int64
}

// Divide shares out a memory budget of total bytes.
func Divide(total int64) Budgets {
	live := (total - 96<<20) * 10 / 15 // what may be live under the GC's headroom
	return Live(max(live, 8<<20))
}

// Live shares out live bytes (what may be live at once).
func Live(live int64) Budgets {
	return Budgets{
		Contacts:  live * 30 / 100,
		Profiles:  live * 45 / 100,
		ByContact: live * 45 / 100,
		Rejects:   live * 5 / 100,
		Dirty:     live * 10 / 100,
		PKeys:     live * 10 / 100,
	}
}
