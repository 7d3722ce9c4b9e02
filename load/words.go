package load

import (
	"time"

	"optsync/transform"
)

// Plural is a count with its noun: "1 contact", "2 contacts", "3 entries"
// (transform.Plural: the safety stop's message says it first).
func Plural(n int, one string) string { return transform.Plural(n, one) }

// Took is a duration with its unit, as precise as is worth reading:
// 850µs, 177ms, 4.6s, 2m3s.
func Took(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
