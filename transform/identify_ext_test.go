package transform_test

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"optsync/extract"
	"optsync/transform"
	"optsync/transform/sorts"
)

// The contacts are sorted beside the rule by PKey: a failure there (a run
// that cannot be written) still ends Identify with its error, and the
// profiles' side is let go.
func TestIdentifyContactsSortFails(t *testing.T) {
	dir := t.TempDir()
	// Two contacts' worth of budget: the third spills a run, the fourth
	// stays in memory until Sorted spills it too.
	contacts := sorts.Contacts(2*transform.ContactSize+1, dir)
	ks := extract.NewKeys()
	kw := ks.Writer()
	profiles := sorts.Profiles(ks, false, 0, "")
	for i := range 4 {
		c := extract.Contact{ID: extract.ID{0: byte(i + 1)}, Modified: 1, Line: int32(i + 2)}
		if err := contacts.Add(&c); err != nil {
			t.Fatal(err)
		}
		p := extract.Profile{ID: c.ID, PKey: kw.Put(string(rune('a' + i))), Modified: 1, Line: int32(i + 2)}
		if err := profiles.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(dir); err != nil { // the last run has nowhere to go
		t.Fatal(err)
	}
	files := []extract.InputFile{{}}
	id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
		Later: sorts.Rejects(0, ""), Sorts: sorts.Identity{}, Keys: ks, ReadKeys: kw})
	if !errors.Is(err, fs.ErrNotExist) || id != nil {
		t.Fatalf("Identify = %v, %v; want the failed spill's error", id, err)
	}
}
