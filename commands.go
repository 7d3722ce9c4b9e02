package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
)

// validate checks the config, then the inputs as a run would read them
// (load.Validation), with --online the APIs too.
func validate(ctx context.Context, cfg *Config, online bool, log zerolog.Logger, out io.Writer) error {
	tr := &cfg.transform
	fmt.Fprintf(out, "config %s: ok (direction %s, policy %s, %s, max_optin %s, max_missing %s)\n",
		cfg.path, tr.Rules.Direction, tr.Rules.Policy, load.Plural(len(tr.Rules.Pairs), "mapping"), tr.OptinLimit, tr.MissingLimit)
	if online {
		conns, err := (&job{cfg: cfg, log: log}).connect()
		if err != nil {
			return err
		}
		if n, err := conns.CheckOnline(ctx, &cfg.extract, cfg.D365.tracking(), out); err != nil {
			return fmt.Errorf("validate --online: %w", err)
		} else if n > 0 {
			return usagef("validate --online: %s", load.Plural(n, "problem"))
		}
	}
	// Held to the same clock as a run: a row dated too far ahead is a reject.
	j := &job{cfg: cfg, log: log, notAfter: cfg.extract.NotAfter(time.Now().UTC())}
	return load.Validation{D365: extract.InputOf("d365", cfg.D365.Source, cfg.D365.CSV, ""), Campaign: extract.InputOf("campaign", cfg.Campaign.Source, cfg.Campaign.CSV, ""),
		Reading: j.reading(&load.Connections{}, nil), Budgets: j.budgets(), TmpDir: cfg.TmpDir}.Check(ctx, out)
}
