package extract

import (
	"fmt"
	"time"
)

// Future is the reason a change time read from column is not believed: it
// is later than notAfter, the run's start plus max_clock_skew. A record
// dated in the future (year 9999, a clock hours ahead) would be newer than
// every real change after it, each of which would then be dropped as a
// stale row: such a row is bad. "" when the time is believable, or when
// notAfter is zero (no bound).
func Future(column string, ms int64, notAfter time.Time) string {
	if notAfter.IsZero() || ms <= notAfter.UnixMilli() {
		return ""
	}
	return fmt.Sprintf("%s %s is in the future: later than %s, the run's start plus max_clock_skew", column,
		time.UnixMilli(ms).UTC().Format(time.RFC3339), notAfter.UTC().Format(time.RFC3339))
}
