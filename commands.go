package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"optsync/extract"
	"optsync/load"
	"optsync/load/show"
	"optsync/transform"
	"optsync/transform/sorts"
)

// validateInputs reads the exports the config names as a run would, and
// reports their rows and the rows a run would reject, by reason with the
// first examples (load.Tally): the same rows a backfill over these files
// (or a first run over the drops) lists in its rejects file. Only a config
// error or a missing column fails it.
func validateInputs(ctx context.Context, cfg *Config, online bool, log zerolog.Logger, out io.Writer) error {
	tr := &cfg.transform
	fmt.Fprintf(out, "config %s: ok (direction %s, policy %s, %s, max_optin %s, max_missing %s)\n",
		cfg.path, tr.Rules.Direction, tr.Rules.Policy, plural(len(tr.Rules.Pairs), "mapping"), tr.OptinLimit, tr.MissingLimit)
	if online {
		if err := validateOnline(ctx, cfg, log, out); err != nil {
			return err
		}
	}
	var files [2][]extract.InputFile
	for i, s := range []*SystemConfig{&cfg.D365.SystemConfig, &cfg.Campaign.SystemConfig} {
		system := [2]string{"d365", "campaign"}[i]
		switch {
		case s.Source == "api":
			fmt.Fprintf(out, "%s: read through the API (check it with --online)\n", system)
		case s.CSV == "":
			fmt.Fprintf(out, "%s: no csv configured (pass one to backfill)\n", system)
		default:
			var err error
			if files[i], err = extract.DropFiles(s.CSV); err != nil {
				return err
			} else if len(files[i]) == 0 {
				fmt.Fprintf(out, "%s %s: no files yet\n", system, s.CSV)
			}
		}
	}
	// Held to the same clock as a run: a row dated too far ahead is a reject.
	j := &job{cfg: cfg, log: log, notAfter: cfg.extract.NotAfter(time.Now().UTC())}
	t := &load.Tally{}
	in, _, err := j.reading(&load.Connections{}, t).Read(ctx, files[0], files[1])
	if err != nil {
		return err
	}
	if len(files[0]) > 0 {
		fmt.Fprintf(out, "d365 %s: columns ok, %s\n", cfg.D365.CSV, plural(in.D365.Rows, "row"))
	}
	if len(files[1]) > 0 {
		fmt.Fprintf(out, "campaign %s: columns ok, %s\n", cfg.Campaign.CSV, plural(in.Campaign.Rows, "row"))
	}
	if err := j.identityRejects(in, files[0], files[1], t); err != nil {
		return err
	}
	t.Write(out)
	return nil
}

// identityRejects adds the identity rules' rejects (superseded rows,
// duplicates) to t, as a run finds them.
func (j *job) identityRejects(in *extract.Records, d365Files, campFiles []extract.InputFile, t *load.Tally) error {
	dir := j.cfg.TmpDir
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = os.TempDir() // validate creates nothing of the config's
	}
	b := j.budgets()
	later := sorts.Rejects(b.Rejects, dir)
	defer later.Close()
	id, err := transform.Identify(in.Contacts, in.Profiles, transform.IdentifyOptions{D365Files: d365Files, CampaignFiles: campFiles, Later: later, Sorts: sorts.Identity{Budget: b.ByContact, Dir: dir}})
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
	return rs.Err()
}

// validateOnline gets a token from each API the config uses and checks the
// mapping against the live services (extract's CheckMapping).
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
	pairs := cfg.transform.Rules.Pairs
	if conns.Contacts != nil {
		found, tracking, err := conns.Contacts.API.CheckMapping(ctx, cfg.extract.D365.Fields, cfg.D365.tracking())
		if err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
		if problems = found; len(problems) == 0 {
			fmt.Fprintf(out, "d365 %s: token ok, %s exist and are boolean, change tracking %v\n", cfg.extract.DataverseConn.URL, plural(len(pairs), "mapped field"), tracking)
		}
	}
	if cc := &cfg.extract.CampaignConn; conns.Profiles != nil {
		found, err := conns.Profiles.API.CheckMapping(ctx, cfg.extract.Campaign.Fields, cc)
		if err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
		if problems = append(problems, found...); len(found) == 0 {
			fmt.Fprintf(out, "campaign %s: token ok, organization %s answers, %s boolean on %s\n",
				cc.BaseURL, cc.Organization, plural(len(pairs), "mapped field"), cc.Resource)
		}
	}
	for _, p := range problems {
		fmt.Fprintln(out, "problem:", p)
	}
	if len(problems) > 0 {
		return usagef("validate --online: %s", plural(len(problems), "problem"))
	}
	return nil
}

// installCommands are version, completion and man.
func installCommands(stdout io.Writer) []*cli.Command {
	write := func(s string, err error) error {
		if err == nil {
			_, err = io.WriteString(stdout, s)
		}
		return err
	}
	return []*cli.Command{{
		Name: "version", Usage: "the version, VCS revision and commit time this binary was built from", OnUsageError: onUsage,
		Action: func(c *cli.Context) error { show.ReadBuild().Write(stdout); return nil },
	}, {
		Name: "completion", Usage: "print a shell completion script: completion bash|zsh|fish", ArgsUsage: "bash|zsh|fish", OnUsageError: onUsage,
		Action: func(c *cli.Context) error {
			switch shell := c.Args().First(); {
			case shell == "fish":
				s, err := c.App.ToFishCompletion()
				return write(s, wrap("fish completion", err))
			case show.Completion(shell) != "":
				return write(show.Completion(shell), nil)
			default:
				return usagef("completion %q: want bash, zsh or fish", shell)
			}
		},
	}, {
		Name: "man", Usage: "print the man page (roff): optsync man > /usr/local/share/man/man1/optsync.1", OnUsageError: onUsage,
		Action: func(c *cli.Context) error {
			s, err := c.App.ToManWithSection(1)
			return write(s, wrap("man page", err))
		},
	}}
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// The root's messages use the words of the run's outputs (load/words.go).
func plural(n int, one string) string { return load.Plural(n, one) }
