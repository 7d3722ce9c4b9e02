package transform_test

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"optsync/extract"
	"optsync/transform"
	"optsync/transform/sorts"
)

// apartRow is a profile row of the tests below (and its contact's).
type apartRow struct {
	id       extract.ID
	pkey     string // "": a PKey that could not be read
	modified int64
	bad      bool
	unlinked bool
	file     uint16
}

// apartRows are rows with every case the rule by PKey tells apart: PKeys
// read again in a later row or file (another contact, the same one, a
// newer or older time, one that cannot be read), contacts with two
// profiles, rows without a contact, bad rows, rows whose PKey could not
// be read.
func apartRows(seed uint64, n int) []apartRow {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var rows []apartRow
	for i := range n {
		var r apartRow
		r.id[0], r.id[1], r.id[2], r.id[15] = byte(rng.IntN(256)), byte(i>>8), byte(i), 0xee
		r.pkey = fmt.Sprintf("@%d-%x", i, rng.Uint32())
		r.modified = 1_700_000_000_000 + rng.Int64N(1e9)
		r.file = uint16(rng.IntN(2))
		switch k := rng.IntN(40); {
		case k < 3 && i > 0: // the PKey of an earlier row, another contact
			r.pkey = rows[rng.IntN(i)].pkey
		case k < 5 && i > 0: // the PKey and contact of an earlier row
			e := rows[rng.IntN(i)]
			r.pkey, r.id = e.pkey, e.id
		case k < 7 && i > 0: // a second profile of an earlier contact
			r.id = rows[rng.IntN(i)].id
		case k == 7:
			r.unlinked, r.id = true, extract.ID{}
		case k == 8 && i > 0:
			r.unlinked, r.id, r.pkey = true, extract.ID{}, rows[rng.IntN(i)].pkey
		case k == 9:
			r.bad = true
		case k == 10:
			r.modified = extract.NoTime
		case k == 11:
			r.pkey, r.bad = "", true
		}
		if rng.IntN(60) == 0 && i > 0 { // a PKey read many times
			r.pkey = "@many"
		}
		rows = append(rows, r)
	}
	return rows
}

// apartRun is how one run of the identity rules reads the rows.
type apartRun struct {
	byContact  bool  // the read's sort is by contact
	budget     int64 // the sorts' (0: all in memory)
	tally      int64 // the SharedPKeys' budget (0: no tally)
	withOwners bool
}

// identifyApart runs the identity rules over rows read as r says, and
// returns the entries, the rejects and the counts as lines.
func identifyApart(t *testing.T, rows []apartRow, r apartRun) []string {
	t.Helper()
	dir := t.TempDir()
	ks := extract.NewKeys()
	read := ks.Writer()
	contacts := sorts.Contacts(r.budget, dir)
	profiles := sorts.Profiles(ks, r.byContact, r.budget, dir)
	var shared *transform.SharedPKeys
	if r.tally > 0 {
		shared = transform.NewSharedPKeys(r.tally)
	}
	seenC := map[extract.ID]bool{}
	for i, row := range rows {
		if !row.unlinked && !seenC[row.id] {
			seenC[row.id] = true
			c := extract.Contact{ID: row.id, Modified: 1_700_000_000_000, Line: int32(i + 2)}
			if err := contacts.Add(&c); err != nil {
				t.Fatal(err)
			}
		}
		p := extract.Profile{ID: row.id, Modified: row.modified, Line: int32(i + 2), File: row.file, Bad: row.bad, Unlinked: row.unlinked}
		if row.pkey != "" {
			p.PKey = read.Put(row.pkey)
		}
		if shared != nil {
			shared.Add(row.pkey) // as the reading does from its first spill on: every row
		}
		spilled := profiles.Spilled
		if err := profiles.Add(&p); err != nil {
			t.Fatal(err)
		}
		if profiles.Spilled != spilled {
			read.Recycle() // as the reading does
		}
	}
	if r.tally > 0 && shared.Counting() != (len(rows) > int(max(r.tally, 1<<10)/4)) {
		t.Fatalf("tally of %d bytes over %d rows: counting %v", r.tally, len(rows), shared.Counting())
	}
	files := []extract.InputFile{{Path: "a.csv"}, {Path: "b.csv"}}
	later := sorts.Rejects(r.budget, dir)
	id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
		WithOwners: r.withOwners, Later: later, Sorts: sorts.Identity{Budget: r.budget, Dir: dir}, Keys: ks, ReadKeys: read,
		ProfilesByContact: r.byContact, Shared: shared})
	if err != nil {
		t.Fatal(err)
	}
	defer id.Close()
	var lines []string
	for e := id.Next(); e != nil; e = id.Next() {
		lines = append(lines, fmt.Sprintf("%d %x c=%v p=%v %s/%d/%d bad=%v", e.Kind, e.ID, e.HasC, e.HasP, e.P.PKey, e.P.File, e.P.Line, e.P.Bad))
	}
	if err := id.Err(); err != nil {
		t.Fatal(err)
	}
	lines = append(lines, rejectLines(t, later, true)...)
	lines = append(lines, fmt.Sprintf("superseded %d duplicates %d unlinked %d stats %+v",
		id.Superseded, id.Duplicates, id.Unlinked, id.Stats))
	if r.withOwners {
		lines = append(lines, fmt.Sprintf("owners %v", id.Owners()))
	}
	return lines
}

// A read sorted by contact, past its budget, with every PKey counted, makes
// the entries, rejects and counts the read sorted by PKey makes, held or
// spilled: whether few rows go the rule's longer way (a tally with room)
// or most (a tally of a few bits, nearly every row marked); a read sorted
// by contact whose rule must hear of every PKey (owners) sorts its rows
// again by PKey, held or spilled, to the same end.
func TestProfilesByContactAsByPKey(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		rows := apartRows(seed, 4000)
		want := identifyApart(t, rows, apartRun{})
		if len(want) < 4000 {
			t.Fatalf("%d lines", len(want))
		}
		for name, r := range map[string]apartRun{
			"by PKey, spilled":               {budget: 16 << 10},
			"by contact, held":               {byContact: true},
			"by contact, spilled, roomy":     {byContact: true, budget: 16 << 10, tally: 1 << 20},
			"by contact, spilled, counts":    {byContact: true, budget: 16 << 10, tally: 4 << 10},
			"by contact, spilled, few bits":  {byContact: true, budget: 16 << 10, tally: 1},
			"by contact, spilled, no tally":  {byContact: true, budget: 16 << 10},
			"by contact, spilled, side held": {byContact: true, budget: 64 << 10, tally: 1 << 20},
		} {
			if got := identifyApart(t, rows, r); !slices.Equal(got, want) {
				t.Errorf("seed %d, %s: differs from the held read by PKey at %s (%d lines, want %d)", seed, name, firstDiff(got, want), len(got), len(want))
			}
		}
		wantOwners := identifyApart(t, rows, apartRun{withOwners: true})
		for name, r := range map[string]apartRun{
			"owners, by contact, held":    {byContact: true, withOwners: true},
			"owners, by contact, spilled": {byContact: true, withOwners: true, budget: 16 << 10, tally: 1 << 20},
		} {
			if got := identifyApart(t, rows, r); !slices.Equal(got, wantOwners) {
				t.Errorf("seed %d, %s: differs from the held read by PKey at %s", seed, name, firstDiff(got, wantOwners))
			}
		}
	}
}

// A spilled read sorted by contact whose runs' folder is gone by the
// time the rule runs (the rows held cannot be written as a run, nor the
// shared rows sorted apart) ends Identify with that error, not with a
// stream missing rows.
func TestProfilesByContactSortFails(t *testing.T) {
	dir := t.TempDir()
	ks := extract.NewKeys()
	read := ks.Writer()
	contacts := sorts.Contacts(0, "")
	profiles := sorts.Profiles(ks, true, 16<<10, dir)
	shared := transform.NewSharedPKeys(1 << 20)
	for i, row := range apartRows(4, 2000) {
		p := extract.Profile{ID: row.id, Modified: row.modified, Line: int32(i + 2), File: row.file, Bad: row.bad, Unlinked: row.unlinked}
		if row.pkey != "" {
			p.PKey = read.Put(row.pkey)
		}
		shared.Add(row.pkey)
		spilled := profiles.Spilled
		if err := profiles.Add(&p); err != nil {
			t.Fatal(err)
		}
		if profiles.Spilled != spilled {
			read.Recycle()
		}
	}
	if profiles.Spilled == 0 || profiles.Len() == 0 {
		t.Fatalf("%d runs, %d rows held: the test needs both", profiles.Spilled, profiles.Len())
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	files := []extract.InputFile{{}, {}}
	id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
		Later: sorts.Rejects(0, ""), Sorts: sorts.Identity{Budget: 16 << 10, Dir: dir}, Keys: ks, ReadKeys: read,
		ProfilesByContact: true, Shared: shared})
	if !errors.Is(err, fs.ErrNotExist) || id != nil {
		t.Fatalf("Identify = %v, %v; want the failed spill's error", id, err)
	}
}
