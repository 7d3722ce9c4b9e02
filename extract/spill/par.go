package spill

import "sync"

// A run written while the records are read stops the reading of its
// side: the reader waits for the sort and the write. When the other side
// has ended, or waits itself, a core sat idle through every spill of a
// 10 M backfill's last seconds. A large run's sort and encoding are
// shared by two goroutines (the run written is the same): with both
// cores busy anyway, it costs the handing over alone.

// parallelFrom is the fewest records a run has whose sort and encoding
// two goroutines share.
const parallelFrom = 1 << 16

// inParallel calls f(0), ..., f(ways-1) at once and returns when all have
// returned.
func inParallel(ways int, f func(w int)) {
	var wg sync.WaitGroup
	for w := 1; w < ways; w++ {
		wg.Go(func() { f(w) })
	}
	f(0)
	wg.Wait()
}
