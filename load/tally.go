package load

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"optsync/extract"
)

// Tally sums rejects up by kind of reason as they are found, keeping each
// kind's first three rows by file and line: validate's answer to "what
// would a run reject", for a file of millions of bad rows as for a few.
type Tally struct {
	mu     sync.Mutex
	n      int
	seq    int
	groups map[string]*rejectKind
}

type rejectKind struct {
	n, first int // first: the order the kind was first met, for ties
	examples []extract.Reject
}

// Add counts one reject.
func (t *Tally) Add(r extract.Reject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	k := ReasonKind(r.Reason)
	if t.groups == nil {
		t.groups = map[string]*rejectKind{}
	}
	g := t.groups[k]
	if g == nil {
		t.seq++
		g = &rejectKind{first: t.seq}
		t.groups[k] = g
	}
	g.n++
	i, _ := slices.BinarySearchFunc(g.examples, r, func(a, b extract.Reject) int {
		if c := a.Source.Compare(b.Source); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	if i < 3 {
		r.Reason, r.ID, r.Source.Name = strings.Clone(r.Reason), strings.Clone(r.ID), strings.Clone(r.Source.Name)
		g.examples = slices.Insert(g.examples, i, r)[:min(len(g.examples)+1, 3)]
	}
}

// Err is nil: a tally holds nothing that can fail.
func (t *Tally) Err() error { return nil }

// Write says what would be rejected: the count by kind, most first, each
// with its first rows.
func (t *Tally) Write(out io.Writer) {
	if t.n == 0 {
		fmt.Fprintln(out, "would be rejected: none")
		return
	}
	kinds := slices.Collect(maps.Keys(t.groups))
	slices.SortFunc(kinds, func(a, b string) int {
		if c := cmp.Compare(t.groups[b].n, t.groups[a].n); c != 0 {
			return c
		}
		return cmp.Compare(t.groups[a].first, t.groups[b].first)
	})
	fmt.Fprintf(out, "would be rejected: %s, by reason (a run over these files lists the same rows in its rejects file):\n", Plural(t.n, "row"))
	for _, k := range kinds {
		g := t.groups[k]
		fmt.Fprintf(out, "  %d × %s\n", g.n, k)
		for _, r := range g.examples {
			id := ""
			if r.IDChecked && r.ID != "" {
				id = " (" + r.ID + ")"
			}
			fmt.Fprintf(out, "      %s line %d%s: %s\n", r.Source.Short(), r.Line, id, r.Reason)
		}
	}
}

var (
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	fileLine = regexp.MustCompile(`(?:[^\s:]+ )?line \d+`)
	number   = regexp.MustCompile(`\b\d+\b`)
)

// ReasonKind is a reject reason without the row's own particulars (its
// values, the file and line it points to, counts), so that rows rejected
// for one reason group: `donotemail "maybe" is not a boolean` and
// `donotemail "2" is not a boolean` are one kind.
func ReasonKind(reason string) string {
	k := quoted.ReplaceAllString(reason, `"…"`)
	k = fileLine.ReplaceAllString(k, "line N")
	return number.ReplaceAllString(k, "N")
}
