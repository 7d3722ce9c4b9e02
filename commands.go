package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/transform"
)

// validateInputs reads the exports the config names as a run would, and
// reports their rows and the rows a run would reject, by reason with the
// first examples: the same rows a backfill over these files (or a first run
// over the drops) lists in its rejects file. Only a config error or a
// missing column fails it.
func validateInputs(ctx context.Context, cfg *Config, online bool, log zerolog.Logger, out io.Writer) error {
	fmt.Fprintf(out, "config %s: ok (direction %s, policy %s, %s, max_optin %s, max_missing %s)\n",
		cfg.path, cfg.transform.Rules.Direction, cfg.transform.Rules.Policy, plural(len(cfg.transform.Rules.Pairs), "mapping"), cfg.transform.OptinLimit, cfg.transform.MissingLimit)
	if online {
		if err := validateOnline(ctx, cfg, log, out); err != nil {
			return err
		}
	}
	list := func(system, pattern string, api bool) ([]extract.InputFile, error) {
		switch {
		case api:
			fmt.Fprintf(out, "%s: read through the API (check it with --online)\n", system)
			return nil, nil
		case pattern == "":
			fmt.Fprintf(out, "%s: no csv configured (pass one to backfill)\n", system)
			return nil, nil
		}
		files, err := extract.DropFiles(pattern)
		if err == nil && len(files) == 0 {
			fmt.Fprintf(out, "%s %s: no files yet\n", system, pattern)
		}
		return files, err
	}
	d365Files, err := list("d365", cfg.D365.CSV, cfg.D365.Source == "api")
	if err != nil {
		return err
	}
	campFiles, err := list("campaign", cfg.Campaign.CSV, cfg.Campaign.Source == "api")
	if err != nil {
		return err
	}
	// Held to the same clock as a run: a row dated too far ahead is a reject.
	j := &job{cfg: cfg, log: log, notAfter: cfg.extract.NotAfter(time.Now().UTC())}
	// Rejects are tallied by reason as they are found, not held: a file of
	// millions of bad rows is summed up, not kept.
	t := &tally{groups: map[string]*rejectKind{}}
	in, _, err := j.reading(&load.Connections{}, t).Read(ctx, d365Files, campFiles)
	if err != nil {
		return err
	}
	if len(d365Files) > 0 {
		fmt.Fprintf(out, "d365 %s: columns ok, %s\n", cfg.D365.CSV, plural(in.D365.Rows, "row"))
	}
	if len(campFiles) > 0 {
		fmt.Fprintf(out, "campaign %s: columns ok, %s\n", cfg.Campaign.CSV, plural(in.Campaign.Rows, "row"))
	}
	// The identity rules' rejects (superseded rows, duplicates), as a run
	// finds them.
	dir := cfg.TmpDir
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = os.TempDir() // validate creates nothing of the config's
	}
	b := j.budgets()
	later := newRejectSorter(b.Rejects, dir)
	defer later.Close()
	id, err := transform.Identify(in.Contacts, in.Profiles, transform.IdentifyOptions{D365Files: d365Files, CampaignFiles: campFiles, Later: later, Sorts: sorts{budget: b.ByContact, dir: dir}})
	if err != nil {
		return err
	}
	defer id.Close()
	if err := id.Drain(); err != nil {
		return err
	}
	rs, err := later.Sorted()
	if err != nil {
		return err
	}
	for r := rs.Next(); r != nil; r = rs.Next() {
		t.Add(*r)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return err
	}
	if t.n == 0 {
		fmt.Fprintln(out, "would be rejected: none")
		return nil
	}
	kinds := slices.Collect(maps.Keys(t.groups))
	slices.SortFunc(kinds, func(a, b string) int {
		if c := cmp.Compare(t.groups[b].n, t.groups[a].n); c != 0 {
			return c
		}
		return cmp.Compare(t.groups[a].first, t.groups[b].first)
	})
	fmt.Fprintf(out, "would be rejected: %s, by reason (a run over these files lists the same rows in its rejects file):\n", plural(t.n, "row"))
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
	return nil
}

// tally sums rejects up by kind of reason, keeping each kind's first three
// rows by file and line.
type tally struct {
	mu     sync.Mutex
	n      int
	seq    int
	groups map[string]*rejectKind
}

type rejectKind struct {
	n, first int // first: the order the kind was first met, for ties
	examples []extract.Reject
}

func (t *tally) Add(r extract.Reject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	k := reasonKind(r.Reason)
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

func (t *tally) Err() error { return nil }

var (
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	fileLine = regexp.MustCompile(`(?:[^\s:]+ )?line \d+`)
	number   = regexp.MustCompile(`\b\d+\b`)
)

// reasonKind is a reject reason without the row's own particulars (its
// values, the file and line it points to, counts), so that rows rejected
// for one reason group: `donotemail "maybe" is not a boolean` and
// `donotemail "2" is not a boolean` are one kind.
func reasonKind(reason string) string {
	k := quoted.ReplaceAllString(reason, `"…"`)
	k = fileLine.ReplaceAllString(k, "line N")
	return number.ReplaceAllString(k, "N")
}

// validateOnline gets a token from each API the config uses and checks the
// mapping against the live services: every mapped Dynamics field exists on
// contact and is boolean, change tracking is enabled when the config counts
// on it; the Campaign organization answers, every mapped field is on the
// profile resource, and the changed-since filter answers.
func validateOnline(ctx context.Context, cfg *Config, log zerolog.Logger, out io.Writer) error {
	if !cfg.D365.api() && !cfg.Campaign.api() {
		fmt.Fprintln(out, "online: no system uses the API; nothing to check")
		return nil
	}
	j := &job{cfg: cfg, log: log}
	conns, err := j.connect()
	if err != nil {
		return err
	}
	var problems []string
	if conns.Contacts != nil {
		types, tracking, err := conns.Contacts.API.Attributes(ctx)
		if err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
		for i, p := range cfg.transform.Rules.Pairs {
			switch t, ok := types[p.D365]; {
			case !ok:
				problems = append(problems, fmt.Sprintf("mappings[%d]: d365 field %s does not exist on contact", i, p.D365))
			case t != "Boolean":
				problems = append(problems, fmt.Sprintf("mappings[%d]: d365 field %s is %s, not Boolean", i, p.D365, t))
			}
		}
		if cfg.D365.tracking() && !tracking {
			problems = append(problems, "d365.change_tracking: change tracking is not enabled on the contact table (enable it, or set change_tracking: false)")
		}
		if len(problems) == 0 {
			fmt.Fprintf(out, "d365 %s: token ok, %s exist and are boolean, change tracking %v\n", cfg.extract.DataverseConn.URL, plural(len(cfg.transform.Rules.Pairs), "mapped field"), tracking)
		}
	}
	if conns.Profiles != nil {
		n := len(problems)
		types, err := conns.Profiles.API.ResourceFields(ctx)
		if err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
		for i, p := range cfg.transform.Rules.Pairs {
			switch t, ok := types[p.Campaign]; {
			case !ok:
				problems = append(problems, fmt.Sprintf("mappings[%d]: campaign field %s is not on the %s profile resource", i, p.Campaign, cfg.extract.CampaignConn.Resource))
			case t != "boolean":
				problems = append(problems, fmt.Sprintf("mappings[%d]: campaign field %s is %s, not boolean", i, p.Campaign, t))
			}
		}
		if f := cfg.extract.CampaignConn; f.FilterName != "" {
			_, err := conns.Profiles.API.ChangedSince(ctx, f.FilterName, f.FilterParam, time.Now().Add(time.Minute), func(*extract.Profile) {}, func(extract.Reject) {})
			if err != nil {
				problems = append(problems, fmt.Sprintf("campaign.changed_filter: by%s?%s= does not answer: %v", f.FilterName, f.FilterParam, err))
			}
		}
		if cc := cfg.extract.CampaignConn; len(problems) == n {
			fmt.Fprintf(out, "campaign %s: token ok, organization %s answers, %s boolean on %s\n",
				cc.BaseURL, cc.Organization, plural(len(cfg.transform.Rules.Pairs), "mapped field"), cc.Resource)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(out, "problem:", p)
		}
		return usagef("validate --online: %s", plural(len(problems), "problem"))
	}
	return nil
}
