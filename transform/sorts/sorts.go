// Package sorts makes the run's sorts in the identity rules' orders
// (transform's codecs), each within its share of the memory budget and
// spilling to a folder beyond it: transform itself opens no file, so the
// sorts that may are made here, by the caller's choice of budget and folder.
package sorts

import (
	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// Contacts sorts contacts as the identity rules read them.
func Contacts(budget int64, dir string) *spill.Sorter[extract.Contact] {
	return spill.NewSorter(transform.ContactCodec(), budget, dir, transform.ContactSize)
}

// Profiles sorts profiles by PKey, or by contact; what they name is in ks.
func Profiles(ks *extract.Keys, byContact bool, budget int64, dir string) *spill.Sorter[extract.Profile] {
	return spill.NewSorter(transform.ProfileCodec(ks, byContact), budget, dir, transform.ProfileSize)
}

// Rejects sorts the rejects found after reading into the rejects file's
// order.
func Rejects(budget int64, dir string) *spill.Sorter[extract.Reject] {
	return spill.NewSorter(transform.RejectCodec(), budget, dir, transform.RejectSize)
}

// PKeys sorts PKey entries by PKey, or by contact.
func PKeys(budget int64, dir string, byID bool) *spill.Sorter[transform.PKeyEntry] {
	return spill.NewSorter(transform.PKeyCodec(byID), budget, dir, transform.PKeySize)
}

// Identity makes the sorts of the identity rules (transform.Sorts): the
// sort of profiles by contact within Budget, the PKeys state has that the
// input lacks within an eighth of it.
type Identity struct {
	Budget int64
	Dir    string
}

func (s Identity) ProfilesByContact(ks *extract.Keys) *spill.Sorter[extract.Profile] {
	return Profiles(ks, true, s.Budget, s.Dir)
}

// HeldByContact sorts rows held in memory, in place, never spilling
// them: what they hold is not counted (a pass over every row's PKey).
func (s Identity) HeldByContact(ks *extract.Keys, held []extract.Profile) *spill.Sorter[extract.Profile] {
	c := transform.ProfileCodec(ks, true)
	c.Size = nil
	return spill.FromSlice(c, 0, s.Dir, transform.ProfileSize, held)
}

// ProfilesByPKey sorts by PKey within a quarter of Budget: the profiles
// whose PKey another may share, a few of a read sorted by contact.
func (s Identity) ProfilesByPKey(ks *extract.Keys) *spill.Sorter[extract.Profile] {
	return Profiles(ks, false, s.Budget/4, s.Dir)
}

func (s Identity) PKeysByID() *spill.Sorter[transform.PKeyEntry] {
	return PKeys(s.Budget/8, s.Dir, true)
}
