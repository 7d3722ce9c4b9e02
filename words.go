package main

import (
	"time"

	"optsync/load"
)

// The root's messages use the words of the run's outputs (load/words.go).

func plural(n int, one string) string { return load.Plural(n, one) }
func percent(part, whole int) string  { return load.Percent(part, whole) }
func took(d time.Duration) string     { return load.Took(d) }
