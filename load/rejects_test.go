package load

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"optsync/extract"
)

// Rejects spilled as they are found come back merged with the later ones,
// sorted by source and line, the spilled one first on a tie; nothing of
// the spool is left behind.
func TestRejectSpoolMerge(t *testing.T) {
	dir := t.TempDir()
	s, err := NewRejectSpool(dir, "R1")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, src := range []string{"b.csv", "a.csv"} {
		wg.Add(1)
		go func() { // both systems are read at once
			defer wg.Done()
			for line := 2; line <= 400; line += 2 {
				s.Add(extract.Reject{Source: extract.File(src), Line: line, ID: "@p" + fmt.Sprint(line), IDChecked: true, Reason: "bad, \"quoted\"\nreason"})
			}
		}()
	}
	wg.Wait()
	s.Add(extract.Reject{Source: extract.File("c.csv"), Line: 9, Reason: "late line"})
	s.Add(extract.Reject{Source: extract.File("c.csv"), Line: 3, Reason: "out of order"})
	if s.Len() != 402 {
		t.Fatalf("Len %d", s.Len())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 || !strings.Contains(entries[0].Name(), "R1") || !strings.HasSuffix(entries[0].Name(), ".partial") {
		t.Fatalf("spill files %v", entries)
	}
	later := []extract.Reject{
		{Source: extract.File("b.csv"), Line: 3, Reason: "superseded"},
		{Source: extract.File("a.csv"), Line: 400, Reason: "duplicate"},
		{Source: extract.File("0.csv"), Line: 1, Reason: "before every source"},
		{Source: extract.File("z.csv"), Line: 1, Reason: "after every source"},
		{Source: extract.File("a.csv"), Line: 1, Reason: "first of a"},
	}
	// Merge takes them sorted by source and line, as the run's sorter
	// hands them over.
	slices.SortStableFunc(later, func(a, b extract.Reject) int {
		return cmp.Or(a.Source.Compare(b.Source), cmp.Compare(a.Line, b.Line))
	})
	next := func() *extract.Reject {
		if len(later) == 0 {
			return nil
		}
		r := &later[0]
		later = later[1:]
		return r
	}
	var got []extract.Reject
	if err := s.Merge(next, func(r extract.Reject) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 407 {
		t.Fatalf("%d rejects merged, want 407", len(got))
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1], got[i]
		if a.Source.Compare(b.Source) > 0 || a.Source == b.Source && a.Line > b.Line {
			t.Fatalf("out of order at %d: %+v then %+v", i, a, b)
		}
	}
	first := map[string]extract.Reject{}
	for i, r := range got {
		if r.Source == extract.File("a.csv") && r.Line == 400 {
			if _, seen := first["a400"]; !seen {
				first["a400"] = r
				if r.Reason == "duplicate" || got[i+1].Reason != "duplicate" {
					t.Errorf("on a tie the spilled reject comes first: %+v, %+v", r, got[i+1])
				}
			}
		}
	}
	if got[0].Source != extract.File("0.csv") || got[len(got)-1].Source != extract.File("z.csv") || got[1].Reason != "first of a" {
		t.Errorf("ends: %+v … %+v", got[:2], got[len(got)-1])
	}
	if r := got[1+1]; r.ID != "@p2" || !r.IDChecked || r.Reason != "bad, \"quoted\"\nreason" {
		t.Errorf("a spilled reject did not come back as it went: %+v", r)
	}
	var c []string
	for _, r := range got {
		if r.Source == extract.File("c.csv") {
			c = append(c, r.Reason)
		}
	}
	if strings.Join(c, "|") != "out of order|late line" {
		t.Errorf("c.csv %v", c)
	}
	s.Close()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the spool left %v", entries)
	}
}

// A source that is no file (an API, the retry queue) keeps its kind through
// the spool, and is written under its name, in name order among files.
func TestRejectSpoolSources(t *testing.T) {
	s, err := NewRejectSpool(t.TempDir(), "R1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	api, queue, file := extract.DataverseAPI(), extract.RetryQueue(extract.DataverseAPI()), extract.File("/drops/d365/night.csv")
	s.Add(extract.Reject{Source: api, Line: 3, Reason: "bad"})
	s.Add(extract.Reject{Source: file, Line: 2, Reason: "bad"})
	var got []extract.Source
	later := []extract.Reject{{Source: queue, Line: 1, Reason: "superseded"}}
	err = s.Merge(func() *extract.Reject {
		if len(later) == 0 {
			return nil
		}
		r := &later[0]
		later = later[1:]
		return r
	}, func(r extract.Reject) error {
		got = append(got, r.Source)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []extract.Source{file, api, queue}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("merged %+v, want %+v", got, want)
	}
	if got[1].Kind != extract.APISource || got[1].IsFile() || got[2].String() != "retry queue (dataverse)" {
		t.Errorf("kinds lost: %+v", got)
	}
}
