//go:build !linux

package spill

// hugePages does nothing here: advice on a mapping's pages is Linux's.
func hugePages([]byte) {}
