package transform_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
	"optsync/transform/sorts"
)

// TestSpilledProfilesKeepTheirPKeys: rows read back from sorted runs on
// disk name their PKeys in blocks kept for a record or two, and the rules
// copy what they keep longer; a PKey's blocks let go of too early would
// panic or name another row's bytes. The identity rules over rows spilled
// every few records (PKeys from one byte to past a block of their own,
// rows of one PKey across many blocks, contacts with two profiles) make
// the same entries and rejects as over the same rows in memory.
func TestSpilledProfilesKeepTheirPKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n = 3000
	type row struct {
		id       extract.ID
		pkey     string
		modified int64
		bad      bool
	}
	var rows []row
	for i := range n {
		var r row
		r.id[0], r.id[1], r.id[15] = byte(i>>8), byte(i), 0xee
		switch k := rng.IntN(20); {
		case k == 0 && i > 0: // another row of the previous PKey, another contact
			r.pkey = rows[i-1].pkey
		case k == 1 && i > 0: // a second profile of the previous contact
			r.id = rows[i-1].id
			fallthrough
		default:
			l := 1 + rng.IntN(300)
			if rng.IntN(50) == 0 {
				l = 2048 + rng.IntN(4000) // a block of its own
			}
			r.pkey = fmt.Sprintf("@%d-%s", i, strings.Repeat(string(rune('a'+i%26)), l))
		}
		r.modified = 1_700_000_000_000 + rng.Int64N(1e9)
		r.bad = rng.IntN(40) == 0
		rows = append(rows, r)
	}
	// A PKey read many times over, beside the others: its rows span
	// blocks of every run.
	for i := range 400 {
		rows = append(rows, row{id: extract.ID{0: 0xff, 1: byte(i), 15: 0xee}, pkey: "@many", modified: int64(i)})
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })

	run := func(budget int64) []string {
		dir := t.TempDir()
		ks := extract.NewKeys()
		read := ks.Writer()
		contacts := sorts.Contacts(budget, dir)
		profiles := sorts.Profiles(ks, false, budget, dir)
		for i, r := range rows {
			c := extract.Contact{ID: r.id, Modified: r.modified, Line: int32(i + 2)}
			if err := contacts.Add(&c); err != nil {
				t.Fatal(err)
			}
			p := extract.Profile{ID: r.id, PKey: read.Put(r.pkey), Modified: r.modified, Line: int32(i + 2), Bad: r.bad}
			spilled := profiles.Spilled
			if err := profiles.Add(&p); err != nil {
				t.Fatal(err)
			}
			if profiles.Spilled != spilled {
				read.Reset() // as the reading does
			}
		}
		if budget > 0 && profiles.Spilled < 10 {
			t.Fatalf("%d runs on disk: the test spills too little", profiles.Spilled)
		}
		got, _ := identifyLines(t, contacts, profiles, ks, read, budget, budget, dir)
		return got
	}
	held, spilled := run(0), run(16<<10)
	if len(held) < n {
		t.Fatalf("%d entries and rejects", len(held))
	}
	if !slices.Equal(held, spilled) {
		for i := range min(len(held), len(spilled)) {
			if held[i] != spilled[i] {
				t.Fatalf("spilled differs at %d of %d/%d:\n held   %.200s\n spilled %.200s", i, len(held), len(spilled), held[i], spilled[i])
			}
		}
		t.Fatalf("held %d lines, spilled %d", len(held), len(spilled))
	}
}

// TestSpilledProfilesKeptFewHeld: profiles read past the budget, most of
// them superseded (eight rows a PKey), leave the rule fewer rows than half
// the sort by contact holds: they stay in memory, decoded with their
// PKeys, and the entries and rejects are those of the same rows all held.
func TestSpilledProfilesKeptFewHeld(t *testing.T) {
	const n = 8 * 600
	run := func(budget int64) ([]string, bool) {
		dir := t.TempDir()
		ks := extract.NewKeys()
		read := ks.Writer()
		contacts, profiles := sorts.Contacts(budget, dir), sorts.Profiles(ks, false, budget, dir)
		for i := range n {
			c := i / 8 * 37 % 600 // the contact of a PKey's rows, in no order
			id := extract.ID{0: byte(c >> 8), 1: byte(c), 15: 0xee}
			if i%8 == 0 {
				if err := contacts.Add(&extract.Contact{ID: id, Modified: 5, Line: int32(i/8 + 2)}); err != nil {
					t.Fatal(err)
				}
			}
			p := extract.Profile{ID: id, PKey: read.Put(fmt.Sprintf("@p%d", c)), Modified: int64(i % 8), Line: int32(i + 2)}
			spilled := profiles.Spilled
			if err := profiles.Add(&p); err != nil {
				t.Fatal(err)
			}
			if profiles.Spilled != spilled {
				read.Reset() // as the reading does
			}
		}
		if budget > 0 && profiles.Spilled < 2 {
			t.Fatalf("%d runs on disk: the test spills too little", profiles.Spilled)
		}
		return identifyLines(t, contacts, profiles, ks, read, budget, 0, dir)
	}
	all, _ := run(0)
	few, held := run(96 << 10)
	if !held {
		t.Fatal("the rows kept were not held in memory")
	}
	if len(all) != n/8+n/8*7 || !slices.Equal(all, few) {
		t.Fatalf("%d lines held, %d spilled; first differing: %v", len(all), len(few), firstDiff(all, few))
	}
}

// identifyLines runs the identity rules over the rows sorted within
// budget in dir (the rejects' sort within rejectsBudget): a line for each
// entry, then one for each reject in order; held says the rows kept were
// held in memory for the join.
func identifyLines(t *testing.T, contacts *spill.Sorter[extract.Contact], profiles *spill.Sorter[extract.Profile], ks *extract.Keys, read *extract.KeyWriter,
	budget, rejectsBudget int64, dir string) (lines []string, held bool) {
	t.Helper()
	files := []extract.InputFile{{}}
	later := sorts.Rejects(rejectsBudget, dir)
	id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
		Later: later, Sorts: sorts.Identity{Budget: budget, Dir: dir}, Keys: ks, ReadKeys: read})
	if err != nil {
		t.Fatal(err)
	}
	defer id.Close()
	_, heldRows := id.Held()
	for e := id.Next(); e != nil; e = id.Next() {
		lines = append(lines, fmt.Sprintf("%d %x c=%v p=%v %s/%d bad=%v", e.Kind, e.ID, e.HasC, e.HasP, e.P.PKey, e.P.Line, e.P.Bad))
	}
	if err := id.Err(); err != nil {
		t.Fatal(err)
	}
	return append(lines, rejectLines(t, later, false)...), heldRows != nil
}

// rejectLines are the rejects later sorted, a line each (with their
// source's name when withSource).
func rejectLines(t *testing.T, later *spill.Sorter[extract.Reject], withSource bool) (lines []string) {
	t.Helper()
	rs, err := later.Sorted()
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for r := rs.Next(); r != nil; r = rs.Next() {
		line := fmt.Sprintf("reject %d %s %s", r.Line, r.ID, r.Reason)
		if withSource {
			line = r.Source.Name + " " + line
		}
		lines = append(lines, line)
	}
	return lines
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("%d: %q / %q", i, a[i], b[i])
		}
	}
	return "none within the shorter"
}
