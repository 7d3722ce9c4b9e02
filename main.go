// Command optsync keeps opt-in/opt-out flags in step between Dynamics 365
// contacts and Adobe Campaign Standard profiles.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"optsync/extract"
	"optsync/state"
)

// Exit codes of the SPEC.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitWriteFailed = 3
	exitSafety      = 4
	exitLocked      = 75
)

func main() {
	// Most of a run's heap is a few large arrays without pointers, cheap to
	// mark; collecting at 50 % growth instead of 100 % keeps a million-contact
	// backfill near 300 MB for little CPU. GOGC, when set, still decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr, hooks{})
	stop()
	os.Exit(code)
}

// hooks lets tests stop a run at a chosen point, the way a kill would.
type hooks struct {
	beforeCommit func()
}

// exitError carries an exit code through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, h hooks) int {
	// Until the flags are parsed there is no logger; errors before that
	// (bad flags, bad log settings) are printed plainly.
	log := zerolog.Nop()
	app := newApp(stdout, stderr, &log, h)
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if log.GetLevel() == zerolog.Disabled {
		fmt.Fprintln(stderr, "optsync:", err)
	} else {
		log.Error().Err(err).Int("exit_code", code).Msg("optsync stopped")
	}
	return code
}

func exitCode(err error) int {
	var ee *exitError
	var ce *configError
	var mc *extract.MissingColumnError
	var le *state.LockedError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce), errors.As(err, &mc):
		return exitUsage
	case errors.As(err, &le):
		return exitLocked
	case errors.Is(err, context.Canceled):
		return exitFailure
	}
	// urfave/cli reports unknown flags and commands as plain errors.
	return exitUsage
}

func newApp(stdout, stderr io.Writer, log *zerolog.Logger, h hooks) *cli.App {
	csvFlags := []cli.Flag{
		&cli.StringFlag{Name: "d365-csv", Usage: "Dynamics contacts export (default: d365.csv of the config)", EnvVars: []string{"OPTSYNC_D365_CSV"}},
		&cli.StringFlag{Name: "campaign-csv", Usage: "Campaign profiles export (default: campaign.csv of the config)", EnvVars: []string{"OPTSYNC_CAMPAIGN_CSV"}},
		&cli.BoolFlag{Name: "replay", Usage: "ignore snapshots: decide every difference as at first sight", EnvVars: []string{"OPTSYNC_REPLAY"}},
	}
	loadCfg := func(c *cli.Context) (*Config, error) {
		cfg, err := loadConfig(c.String("config"))
		if err != nil {
			return nil, withCode(exitUsage, err)
		}
		return cfg, nil
	}
	syncAction := func(plan bool) cli.ActionFunc {
		return func(c *cli.Context) error {
			cfg, err := loadCfg(c)
			if err != nil {
				return err
			}
			j := &job{
				cfg:            cfg,
				log:            *log,
				stdout:         stdout,
				command:        c.Command.Name,
				d365Path:       c.String("d365-csv"),
				campaignPath:   c.String("campaign-csv"),
				replay:         c.Bool("replay"),
				plan:           plan,
				allowMassOptin: c.Bool("allow-mass-optin"),
				hooks:          h,
			}
			return j.run(c.Context)
		}
	}
	return &cli.App{
		Name:      "optsync",
		Usage:     "keep opt-in/opt-out flags in step between Dynamics 365 contacts and Adobe Campaign profiles",
		Writer:    stdout,
		ErrWriter: stderr,
		// Exit codes are ours to choose; never let the library exit.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: "optsync.yaml", Usage: "config file", EnvVars: []string{"OPTSYNC_CONFIG"}},
			&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "auto, json or console", EnvVars: []string{"OPTSYNC_LOG_FORMAT"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "trace, debug, info, warn, error", EnvVars: []string{"OPTSYNC_LOG_LEVEL"}},
		},
		Before: func(c *cli.Context) error {
			l, err := newLogger(stderr, c.String("log-format"), c.String("log-level"))
			if err != nil {
				return withCode(exitUsage, err)
			}
			*log = l
			return nil
		},
		Commands: []*cli.Command{
			{
				Name:  "backfill",
				Usage: "full reconciliation of two exports: decide, write update and audit files, remember what was agreed",
				Flags: append(csvFlags[:len(csvFlags):len(csvFlags)],
					&cli.BoolFlag{Name: "allow-mass-optin", Usage: "let this run clear more opt-outs than safety.max_optin", EnvVars: []string{"OPTSYNC_ALLOW_MASS_OPTIN"}}),
				Action: syncAction(false),
			},
			{
				Name:   "plan",
				Usage:  "what backfill would do: writes only the audit (outcome planned) and rejects files; state is not changed",
				Flags:  csvFlags,
				Action: syncAction(true),
			},
			{
				Name:  "validate",
				Usage: "check the config and the exports' headers",
				Action: func(c *cli.Context) error {
					cfg, err := loadCfg(c)
					if err != nil {
						return err
					}
					return validateInputs(c.Context, cfg, stdout)
				},
			},
			{
				Name:  "runs",
				Usage: "past runs with their counts and outcome, newest first",
				Flags: []cli.Flag{&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}},
				Action: func(c *cli.Context) error {
					cfg, err := loadCfg(c)
					if err != nil {
						return err
					}
					return listRuns(cfg, c.String("format"), stdout)
				},
			},
		},
	}
}

// newLogger logs JSON unless stderr is a terminal (or the format says).
func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: w}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: w, NoColor: true}
	case "json":
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want auto, json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}
