package transform

import "optsync/extract"

// ForgetFutureTimes makes the change times of s that are later than
// notAfter (Unix ms: the run's start plus max_clock_skew) unknown, and
// says which sides it changed. Such a time got into state before rows
// dated in the future were rejected, or from a clock that ran ahead; kept,
// it would make every present-day row of that record look stale (and win
// every conflict), pinning the record for good. Unknown, the next real row
// of the record is taken, and a conflict goes to the side whose time is
// known. Unknown is NoTime: zero is the epoch, a time like any other.
func ForgetFutureTimes(s *Snapshot, notAfter int64) (d, c bool) {
	if s.DModified > notAfter {
		s.DModified, d = extract.NoTime, true
	}
	if s.CModified > notAfter {
		s.CModified, c = extract.NoTime, true
	}
	for i := range s.Pairs {
		if ps := &s.Pairs[i]; ps.CTimeKnown && ps.CTime > notAfter {
			ps.CTime, ps.CTimeKnown, c = 0, false, true
		}
	}
	return d, c
}
