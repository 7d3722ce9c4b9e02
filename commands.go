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

// validate checks the config, then the inputs as a run would read them
// (load.Validation), with --online the APIs too.
func validate(ctx context.Context, cfg *Config, online bool, log zerolog.Logger, out io.Writer) error {
	tr := &cfg.transform
	fmt.Fprintf(out, "config %s: ok (direction %s, policy %s, %s, max_optin %s, max_missing %s)\n",
		cfg.path, tr.Rules.Direction, tr.Rules.Policy, plural(len(tr.Rules.Pairs), "mapping"), tr.OptinLimit, tr.MissingLimit)
	if online {
		conns, err := (&job{cfg: cfg, log: log}).connect()
		if err != nil {
			return err
		}
		if n, err := conns.CheckOnline(ctx, &cfg.extract, cfg.D365.tracking(), out); err != nil {
			return fmt.Errorf("validate --online: %w", err)
		} else if n > 0 {
			return usagef("validate --online: %s", plural(n, "problem"))
		}
	}
	// Held to the same clock as a run: a row dated too far ahead is a reject.
	j := &job{cfg: cfg, log: log, notAfter: cfg.extract.NotAfter(time.Now().UTC())}
	dir := cfg.TmpDir
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = os.TempDir() // validate creates nothing of the config's
	}
	b := j.budgets()
	later := sorts.Rejects(b.Rejects, dir)
	defer later.Close()
	return load.Validation{D365: cfg.D365.system("d365", "", extract.DataverseAPI()), Campaign: cfg.Campaign.system("campaign", "", extract.CampaignAPI()), Reading: j.reading(&load.Connections{}, nil),
		Identify: transform.IdentifyOptions{Later: later, Sorts: sorts.Identity{Budget: b.ByContact, Dir: dir}}}.Check(ctx, out)
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
