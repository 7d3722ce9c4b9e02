package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/rs/zerolog"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"optsync/extract"
	"optsync/state"
)

// validateInputs reads both exports as a run would and reports what it
// found; only a config problem or a missing column fails it.
func validateInputs(ctx context.Context, cfg *Config, online bool, log zerolog.Logger, out io.Writer) error {
	fmt.Fprintf(out, "config %s: ok (direction %s, policy %s, %d mappings, max_optin %s)\n",
		cfg.path, cfg.rules.Direction, cfg.rules.Policy, len(cfg.rules.Pairs), cfg.maxOptin)
	check := func(system, pattern string, read func(f *os.File, path string) (extract.Stats, error)) error {
		if pattern == "" {
			fmt.Fprintf(out, "%s: no csv configured (pass one to backfill)\n", system)
			return nil
		}
		files, err := dropFiles(pattern)
		if err != nil {
			return err
		}
		if len(files) == 0 {
			fmt.Fprintf(out, "%s %s: no files yet\n", system, pattern)
		}
		for _, in := range files {
			f, err := os.Open(in.path)
			if err != nil {
				return fmt.Errorf("input %s cannot be read: %w", in.path, err)
			}
			st, err := read(f, in.path)
			f.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s %s: columns ok, %d rows, %d would be rejected\n", system, in.path, st.Rows, st.Rejected)
		}
		return nil
	}
	if online {
		if err := validateOnline(ctx, cfg, log, out); err != nil {
			return err
		}
	}
	if cfg.D365.Source == "api" {
		fmt.Fprintln(out, "d365: read through the Web API (check it with --online)")
	} else if err := check("d365", cfg.D365.CSV, func(f *os.File, path string) (extract.Stats, error) {
		return extract.ReadContacts(ctx, f, path, cfg.d365Layout(cfg.notAfter(time.Now())), func(*extract.Contact) {}, func(extract.Reject) {})
	}); err != nil {
		return err
	}
	if cfg.Campaign.Source == "api" {
		fmt.Fprintln(out, "campaign: read through the REST API (check it with --online)")
		return nil
	}
	return check("campaign", cfg.Campaign.CSV, func(f *os.File, path string) (extract.Stats, error) {
		return extract.ReadProfiles(ctx, f, path, cfg.campaignLayout(cfg.notAfter(time.Now())), func(*extract.Profile) {}, func(extract.Reject) {})
	})
}

// listRuns prints the run history, newest first.
func listRuns(cfg *Config, format string, out io.Writer, log zerolog.Logger) error {
	if format != "table" && format != "json" {
		return withCode(exitUsage, fmt.Errorf("--format %q: want table or json", format))
	}
	var runs []state.Run
	st, err := openReadOnly(cfg, log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
		if runs, err = st.Runs(); err != nil {
			return err
		}
	}
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // "d365->campaign", not "d365-\u003ecampaign"
		if runs == nil {
			runs = []state.Run{}
		}
		return enc.Encode(runs)
	}
	if len(runs) == 0 {
		fmt.Fprintf(out, "no runs recorded in %s\n", cfg.State)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSTARTED\tDURATION\tCOMMAND\tOUTCOME\tEXIT\tD365->CAMPAIGN\tCAMPAIGN->D365\tSKIPPED\tREJECTED\tFAILED")
	for _, r := range runs {
		dur := "-"
		if !r.Ended.IsZero() {
			dur = took(r.Ended.Sub(r.Started))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", r.ID, r.Started.Format(time.RFC3339), dur,
			r.Command, r.Outcome, r.ExitCode, r.Counts["d365->campaign"], r.Counts["campaign->d365"],
			r.Counts["skipped"], r.Counts["rejected"], r.Counts["failed"])
	}
	return tw.Flush()
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
	if err := j.connect(&cfg.rules); err != nil {
		return err
	}
	var problems []string
	if j.dv != nil {
		types, tracking, err := j.dv.reader.Attributes(ctx)
		if err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
		for i, p := range cfg.rules.Pairs {
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
			fmt.Fprintf(out, "d365 %s: token ok, %d mapped fields exist and are boolean, change tracking %v\n", cfg.D365.URL, len(cfg.rules.Pairs), tracking)
		}
	}
	if j.cv != nil {
		n := len(problems)
		types, err := j.cv.reader.ResourceFields(ctx)
		if err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
		for i, p := range cfg.rules.Pairs {
			switch t, ok := types[p.Campaign]; {
			case !ok:
				problems = append(problems, fmt.Sprintf("mappings[%d]: campaign field %s is not on the %s profile resource", i, p.Campaign, cfg.Campaign.Resource))
			case t != "boolean":
				problems = append(problems, fmt.Sprintf("mappings[%d]: campaign field %s is %s, not boolean", i, p.Campaign, t))
			}
		}
		if f := cfg.Campaign.ChangedFilter; f.Name != "" {
			_, err := j.cv.reader.ChangedSince(ctx, f.Name, f.Param, time.Now().Add(time.Minute), func(*extract.Profile) {}, func(extract.Reject) {})
			if err != nil {
				problems = append(problems, fmt.Sprintf("campaign.changed_filter: by%s?%s= does not answer: %v", f.Name, f.Param, err))
			}
		}
		if len(problems) == n {
			fmt.Fprintf(out, "campaign %s: token ok, organization %s answers, %d mapped fields are boolean on %s\n",
				cfg.Campaign.BaseURL, cfg.Campaign.Organization, len(cfg.rules.Pairs), cfg.Campaign.Resource)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(out, "problem:", p)
		}
		return withCode(exitUsage, fmt.Errorf("validate --online: %d problems", len(problems)))
	}
	return nil
}
