//go:build !linux

package main

const hugeHeap = 0

// heapOnHugePages does nothing here: advice on the heap's pages is Linux's.
func heapOnHugePages(int) (int, error) { return 0, nil }
