package main

import (
	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// The run's sorts, each within its share of the memory budget, spilling to
// tmp_dir beyond it; their orders are the identity rules' (transform's
// codecs).

func newContactSorter(budget int64, dir string) *spill.Sorter[extract.Contact] {
	return spill.NewSorter(transform.ContactCodec(), budget, dir, transform.ContactSize)
}

func newProfileSorter(byContact bool, budget int64, dir string) *spill.Sorter[extract.Profile] {
	return spill.NewSorter(transform.ProfileCodec(byContact), budget, dir, transform.ProfileSize)
}

func newRejectSorter(budget int64, dir string) *spill.Sorter[extract.Reject] {
	return spill.NewSorter(transform.RejectCodec(), budget, dir, transform.RejectSize)
}

func newPKeySorter(budget int64, dir string, byID bool) *spill.Sorter[transform.PKeyEntry] {
	return spill.NewSorter(transform.PKeyCodec(byID), budget, dir, transform.PKeySize)
}

// sorts makes the sorts of the identity rules (transform.Sorts): the sort
// of profiles by contact within budget, the PKeys state has that the input
// lacks within an eighth of it.
type sorts struct {
	budget int64
	dir    string
}

func (s sorts) ProfilesByContact() *spill.Sorter[extract.Profile] {
	return newProfileSorter(true, s.budget, s.dir)
}

func (s sorts) HeldByContact(held []extract.Profile) *spill.Sorter[extract.Profile] {
	return spill.FromSlice(transform.ProfileCodec(true), s.budget, s.dir, transform.ProfileSize, held)
}

func (s sorts) PKeysByID() *spill.Sorter[transform.PKeyEntry] {
	return newPKeySorter(s.budget/8, s.dir, true)
}
