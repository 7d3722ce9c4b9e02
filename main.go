// Command optsync keeps opt-in/opt-out flags in step between Dynamics 365
// contacts and Adobe Campaign Standard profiles.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"optsync/extract"
	"optsync/load"
	"optsync/load/progress"
	"optsync/load/show"
	"optsync/state"
	"optsync/state/inspect"
	"optsync/transform"
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
	ctx, stop := withSignals(context.Background())
	var heap heapAdvice
	heap.bytes, heap.err = heapOnHugePages(hugeHeap)
	code := cmdline{stdout: os.Stdout, stderr: os.Stderr, heap: heap}.run(ctx, os.Args)
	stop()
	os.Exit(code)
}

// hooks are the points where a test stops or pauses a run, the way a kill
// would. Only the tests' kit (kit_test.go) sets them; main leaves them unset.
// commitChunk, when set, is the contacts per state transaction, and
// afterChunk is called after the nth transaction (from 1) committed;
// memoryBudget, when set, replaces what memory_budget leaves (which has a
// floor), so that tests make every sorter spill every few records.
type hooks struct {
	afterDecide  func(ctx context.Context)
	beforeCommit func()
	commitChunk  int
	afterChunk   func(n int)
	memoryBudget int64
	// listedAt is the clock a run's listing of its drops takes the files'
	// stamps at (nil: now): a test's files are seconds old.
	listedAt func() time.Time
}

// usageError is a command line, flag, variable or argument that is wrong:
// the command did nothing and exits 2 (as on the other errors exitCode
// lists with it: the config's, the inputs', a read-only command's).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usage(err error) error { return &usageError{err: err} }

func usagef(format string, args ...any) error { return usage(fmt.Errorf(format, args...)) }

// errShown is the error of a run that has said all there is to say (the
// usage it printed): it only sets the exit code.
var errShown = errors.New("usage shown")

// cmdline is main without the process: the streams the command line writes
// to, and the hooks a test may stop a run at (none in main). Tests run it
// in-process through their kit.
type cmdline struct {
	stdout, stderr io.Writer
	hooks          hooks
	heap           heapAdvice
}

// heapAdvice is what main asked of the kernel for the heap before there
// was a logger to say so (heapOnHugePages): the bytes advised, or why not.
type heapAdvice struct {
	bytes int
	err   error
}

// run runs one command line and returns its exit code.
func (m cmdline) run(ctx context.Context, args []string) int {
	stderr := m.stderr
	// Until the flags are parsed there is no logger; errors before that
	// (bad flags, bad log settings) are printed plainly.
	log := zerolog.Nop()
	app := m.newApp(&log)
	err := app.RunContext(ctx, hoistGlobalFlags(args, app.Flags))
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if errors.Is(err, errShown) {
		return code
	}
	if log.GetLevel() == zerolog.Disabled {
		fmt.Fprintln(stderr, "optsync:", err)
	} else {
		log.Error().Err(err).Int("exit_code", code).Msg("optsync stopped")
	}
	return code
}

// exitCode is the one place an error becomes the SPEC's exit code: 0 ok,
// 1 runtime failure, 2 usage or config error, 3 finished but some writes
// failed, 4 safety stop, 75 state locked, 128+signal (130, 143) stopped
// by a signal or max_run_time. The run history keeps the same code: a
// run's record is closed with exitCode of the error the run returns
// (state.Run.End), and state reset's with this function too.
func exitCode(err error) int {
	var se *signalError
	var lc cli.ExitCoder
	switch {
	case err == nil:
		return exitOK
	case is[*usageError](err):
		return exitUsage
	case is[*load.FailedWritesError](err):
		return exitWriteFailed
	case is[*transform.SafetyStopError](err):
		return exitSafety
	case is[*extract.MissingColumnError](err), is[*extract.BrokenFileError](err), is[*extract.InputError](err),
		is[*extract.SecretError](err), is[*state.QueryError](err), is[*load.OutputRefusedError](err), is[*show.ShellError](err), is[*load.ProblemsError](err):
		return exitUsage
	case is[*state.LockedError](err):
		return exitLocked
	case errors.As(err, &se):
		return 128 + int(se.sig)
	case errors.As(err, &lc) && reflect.TypeOf(lc) == reflect.TypeOf(cli.Exit("", 0)):
		// urfave/cli's own, made with cli.Exit ("No help topic for …");
		// another cli.ExitCoder (an *exec.ExitError) is not the library's.
		return exitUsage
	}
	// Among these the state file's damage: *state.CorruptError,
	// *state.LostError, *state.SealError.
	return exitFailure
}

func is[T error](err error) bool {
	var t T
	return errors.As(err, &t)
}

// newApp is the command table. Every command answers a bad flag with a
// usage error (usageErrors), and reads the config first (withConfig).
func (m cmdline) newApp(log *zerolog.Logger) *cli.App {
	stdout, stderr := m.stdout, m.stderr
	// One progress reporter for the process: log lines on a terminal clear
	// the bar's line before they print.
	prog := progress.New(stderr, progress.IsTerminal(stderr))
	exportFlags := []cli.Flag{
		&cli.StringFlag{Name: "d365-csv", Usage: "Dynamics contacts export (default: d365.csv of the config)", EnvVars: []string{"OPTSYNC_D365_CSV"}},
		&cli.StringFlag{Name: "campaign-csv", Usage: "Campaign profiles export (default: campaign.csv of the config)", EnvVars: []string{"OPTSYNC_CAMPAIGN_CSV"}},
	}
	// Boolean flags read their environment variable through boolOption,
	// which takes the spellings the exports' flags take.
	replay := &cli.BoolFlag{Name: "replay", Usage: "ignore snapshots: decide every difference as at first sight [$OPTSYNC_REPLAY]"}
	force := &cli.BoolFlag{Name: "force", Usage: "process drop files again even if they were processed before [$OPTSYNC_FORCE]"}
	massOptin := &cli.BoolFlag{Name: "allow-mass-optin", Usage: "let this run clear more opt-outs than safety.max_optin [$OPTSYNC_ALLOW_MASS_OPTIN]"}
	allowMissing := &cli.BoolFlag{Name: "allow-missing", Usage: "let this run's full read lack more of the records state knows than safety.max_missing [$OPTSYNC_ALLOW_MISSING]"}
	sync := func(incremental, plan bool) cli.ActionFunc {
		return func(c *cli.Context) error { return m.sync(c, *log, prog, incremental, plan) }
	}
	source := func(cfg *Config) inspect.Source {
		return inspect.Source{Path: cfg.State, Pairs: cfg.transform.Rules.Pairs, Log: *log}
	}
	return &cli.App{
		Name: "optsync", Usage: "keep opt-in/opt-out flags in step between Dynamics 365 contacts and Adobe Campaign profiles",
		Version:   show.ReadBuild().Line(),
		Writer:    stdout,
		ErrWriter: stderr,
		// The completion scripts ask the binary for the next words.
		EnableBashCompletion: true,
		// Exit codes are ours to choose; never let the library exit.
		ExitErrHandler:  func(*cli.Context, error) {},
		OnUsageError:    onUsage,
		HideHelpCommand: true,
		Action:          helpOrUnknown,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: "optsync.yaml", Usage: "config file", EnvVars: []string{"OPTSYNC_CONFIG"}},
			&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "auto, json or console", EnvVars: []string{"OPTSYNC_LOG_FORMAT"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "trace, debug, info, warn, error", EnvVars: []string{"OPTSYNC_LOG_LEVEL"}},
			&cli.StringFlag{Name: "metrics-file", Usage: "write Prometheus textfile metrics here after every run (default: metrics_file of the config)", EnvVars: []string{"OPTSYNC_METRICS_FILE"}},
		},
		Before: func(c *cli.Context) (err error) {
			if *log, err = prog.Logger(stderr, c.String("log-format"), c.String("log-level")); err != nil {
				return usage(err)
			}
			if m.heap.bytes > 0 || m.heap.err != nil {
				log.Debug().Int("bytes", m.heap.bytes).AnErr("error", m.heap.err).Msg("heap on 2 MB pages")
			}
			return nil
		},
		Commands: usageErrors([]*cli.Command{{
			Name: "run", Usage: "incremental sync: what changed since the last run, through the APIs or the drops' files not processed yet (oldest first)",
			Flags:  []cli.Flag{force, massOptin, allowMissing},
			Action: sync(true, false),
		}, {
			Name: "backfill", Usage: "full reconciliation of one export per system: decide, write update and audit files, remember what was agreed",
			Flags: append(slices.Clone(exportFlags), replay, massOptin, allowMissing,
				&cli.BoolFlag{Name: "new-state", Usage: "start over deliberately: a new state file (one found is moved aside, never deleted); every contact is decided as at first sight, and the run history records it"}),
			Action: sync(false, false),
		}, {
			Name: "plan", Usage: "what run (or plan --backfill) would do: writes only the audit (outcome planned) and rejects files; state is not changed",
			Flags:  append(slices.Clone(exportFlags), replay, force, &cli.BoolFlag{Name: "backfill", Usage: "plan a backfill instead of a run"}),
			Action: sync(true, true),
		}, {
			Name: "validate", Usage: "check the config, the exports' columns and the rows a run would reject (--online: credentials and field types through the APIs)",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "online", Usage: "also get a token and check the mapped fields against the live service [$OPTSYNC_ONLINE]"}},
			Action: func(c *cli.Context) error {
				online, err := boolOption(c, "online")
				if err != nil {
					return err
				}
				return withConfig(func(c *cli.Context, cfg *Config) error { return validate(c.Context, cfg, online, *log, stdout) })(c)
			},
		}, {
			Name: "audit", Usage: "what state holds for a contact now, and the decisions recorded: --contact ID | --run ID | --since TIME [--field NAME] [--format table|csv|json]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "contact", Usage: "a contact GUID: what state holds for that person now, then their whole history"},
				&cli.StringFlag{Name: "run", Usage: "a run id"},
				&cli.StringFlag{Name: "since", Usage: "decisions of runs started since: RFC 3339, a date (2026-11-01) or an age (72h, 30d)"},
				&cli.StringFlag{Name: "field", Usage: "only this Dynamics or Campaign field"},
				&cli.StringFlag{Name: "format", Value: "table", Usage: "table, csv or json", EnvVars: []string{"OPTSYNC_FORMAT"}},
			},
			Action: withConfig(func(c *cli.Context, cfg *Config) error {
				return inspect.AuditCommand(source(cfg), inspect.AuditFlags{Contact: c.String("contact"), Run: c.String("run"),
					Since: c.String("since"), Field: c.String("field"), Format: c.String("format")}, stdout)
			}),
		}, {
			Name: "runs", Usage: "past runs with their counts and outcome, newest first",
			Flags: []cli.Flag{&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json", EnvVars: []string{"OPTSYNC_FORMAT"}}},
			Action: withConfig(func(c *cli.Context, cfg *Config) error {
				return inspect.ListRuns(source(cfg), c.String("format"), stdout)
			}),
		}, {
			Name: "report", Usage: "write the HTML report of a run (default: the latest) or of the runs since a time",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "run", Usage: "a run id (see optsync runs)"},
				&cli.StringFlag{Name: "since", Usage: "every run started since: RFC 3339, a date (2026-11-01) or an age (72h, 30d)"},
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "file to write (created 0600; default: out_dir/report-<run>.html or out_dir/report-since-<time>.html)"},
			},
			Action: withConfig(func(c *cli.Context, cfg *Config) error {
				return inspect.ReportCommand(source(cfg), cfg.OutDir, c.String("run"), c.String("since"), c.String("output"), show.ReadBuild().Short(), stdout)
			}),
		}, {
			Name: "state", Usage: "snapshot tools: export, reset, compact",
			OnUsageError: onGroupUsage,
			Subcommands: usageErrors([]*cli.Command{{
				Name: "export", Usage: "snapshots as CSV: contact, profile, pair, agreed value and since when, last decided",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "file to write (created new, 0600, never through a link; default: stdout)"},
					&cli.BoolFlag{Name: "force", Usage: "replace an existing --output file"},
					&cli.StringFlag{Name: "contact", Usage: "only this contact (a GUID)"},
				},
				Action: withConfig(func(c *cli.Context, cfg *Config) error {
					return inspect.Export(source(cfg), c.String("output"), c.Bool("force"), c.String("contact"), stdout)
				}),
			}, {
				Name: "reset", Usage: "forget snapshots, so the next run decides those pairs as at first sight (the vendor's Replay data)",
				Flags: []cli.Flag{&cli.StringFlag{Name: "field", Usage: "only the mapping of this Dynamics field"}},
				Action: withConfig(func(c *cli.Context, cfg *Config) error {
					return state.Reset{Path: cfg.State, OutDir: cfg.OutDir, Rules: &cfg.transform.Rules, Field: c.String("field"), ConfigPath: cfg.path,
						ExitCode: exitCode, Redact: cfg.private.Redact, Log: *log}.Run(c.Context, stdout)
				}),
			}, {
				Name: "compact", Usage: "rewrite the state file in key order, without the free pages nights leave scattered in it (nights slow down as they accumulate); a run waits meanwhile",
				Action: withConfig(func(c *cli.Context, cfg *Config) error {
					return state.Compact{Path: cfg.State, OutDir: cfg.OutDir, Pairs: cfg.transform.Rules.Pairs,
						ExitCode: exitCode, Redact: cfg.private.Redact, Log: *log, Progress: prog}.Run(c.Context, stdout)
				}),
			}}),
		}, {
			Name: "version", Usage: "the version, VCS revision and commit time this binary was built from",
			Action: func(c *cli.Context) error { show.ReadBuild().Write(stdout); return nil },
		}, {
			Name: "completion", Usage: "print a shell completion script: completion bash|zsh|fish",
			ArgsUsage: "bash|zsh|fish",
			Action: func(c *cli.Context) error {
				return show.WriteCompletion(stdout, c.Args().First(), c.App.ToFishCompletion)
			},
		}, {
			Name: "man", Usage: "print the man page (roff): optsync man > /usr/local/share/man/man1/optsync.1",
			Action: func(c *cli.Context) error { return show.WriteMan(stdout, c.App.ToManWithSection) },
		}}),
	}
}

// sync runs backfill, run or plan, and writes the metrics file (a plan
// makes none).
func (m cmdline) sync(c *cli.Context, log zerolog.Logger, prog *progress.Progress, incremental, plan bool) error {
	metrics := load.RunMetrics{Command: c.Command.Name, Started: time.Now().UTC()}
	cfg, err := loadConfig(c.String("config"))
	if err != nil {
		// Monitoring must hear of a run that could not even start.
		metrics.Ended, metrics.ExitCode = metrics.Started, exitCode(err)
		load.WriteMetricsFile(c.String("metrics-file"), !plan, metrics, log)
		return err
	}
	if plan && c.Bool("backfill") {
		incremental = false
	}
	var opt [4]bool
	for i, name := range []string{"replay", "force", "allow-mass-optin", "allow-missing"} {
		if opt[i], err = boolOption(c, name); err != nil {
			return err
		}
	}
	if incremental && (c.String("d365-csv") != "" || c.String("campaign-csv") != "") {
		return usage(errors.New("--d365-csv and --campaign-csv name full exports: use them with backfill or plan --backfill; run reads the configured drops"))
	}
	j := &job{
		cfg: cfg, log: log, stdout: m.stdout, command: c.Command.Name,
		incremental: incremental, plan: plan, hooks: m.hooks,
		d365Path: c.String("d365-csv"), campaignPath: c.String("campaign-csv"),
		replay: opt[0], force: opt[1], allowMassOptin: opt[2], allowMissing: opt[3],
		newState: c.Command.Name == "backfill" && c.Bool("new-state"),
		progress: prog,
	}
	// A run that goes on too long (a service throttling it for hours)
	// stops as it would on SIGTERM.
	ctx, cancel := context.WithTimeoutCause(c.Context, cfg.state.RunTime(), &signalError{sig: syscall.SIGTERM, after: cfg.state.RunTime()})
	err = j.run(ctx)
	cancel()
	metrics.Started, metrics.Ended, metrics.ExitCode, metrics.Sum = j.started, time.Now().UTC(), exitCode(err), j.sum
	load.WriteMetricsFile(cmp.Or(c.String("metrics-file"), cfg.MetricsFile), !plan, metrics, log)
	return err
}

// withConfig reads the config before the command's action.
func withConfig(action func(*cli.Context, *Config) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		cfg, err := loadConfig(c.String("config"))
		if err != nil {
			return err
		}
		return action(c, cfg)
	}
}

// helpOrUnknown answers no command, `help` or an unknown command: the
// usage and the command list, and exit 2.
func helpOrUnknown(c *cli.Context) error {
	args := c.Args().Slice()
	help := len(args) > 0 && args[0] == "help"
	if help {
		args = args[1:]
	}
	switch {
	case len(args) == 0:
		_ = cli.ShowAppHelp(c)
		return usage(errShown)
	case help && c.App.Command(args[0]) != nil:
		_ = cli.ShowCommandHelp(c, args[0])
		return usage(errShown)
	}
	cli.HelpPrinter(c.App.ErrWriter, cli.AppHelpTemplate, c.App)
	var names []string
	for _, cmd := range c.App.VisibleCommands() {
		names = append(names, cmd.Name)
	}
	return usagef("unknown command %q: the commands are %s (listed above)", args[0], strings.Join(names, ", "))
}

// usageErrors makes urfave/cli's complaint about a command's flags a usage
// error, for every command that has no handler of its own.
func usageErrors(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsage
		}
	}
	return cmds
}

// onUsage makes urfave/cli's complaint about a command's flags a usage
// error.
func onUsage(_ *cli.Context, err error, _ bool) error { return usage(err) }

// onGroupUsage is onUsage for a command of commands (state): it answers a
// bad flag as urfave/cli does without a handler, the message and the
// command's help, but with a usage error.
func onGroupUsage(c *cli.Context, err error, _ bool) error {
	fmt.Fprintf(c.App.Writer, "Incorrect Usage: %s\n\n", err)
	if lineage := c.Lineage(); len(lineage) > 1 {
		_ = cli.ShowCommandHelp(lineage[1], c.Command.Name)
	}
	return usage(err)
}

// hoistGlobalFlags moves the global flags written after the command to
// before it, where urfave/cli reads them: `optsync run --config x.yaml`
// works as `optsync --config x.yaml run` does.
func hoistGlobalFlags(args []string, flags []cli.Flag) []string {
	// flag says a is a flag; global, that it is one of flags (not help);
	// next, that its value is the next word.
	flag := func(a string) (isFlag, global, next bool) {
		n, _, withValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" || n == "" {
			return false, false, false
		}
		global = n != "help" && n != "h" && slices.ContainsFunc(flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), n) })
		return true, global, global && !withValue
	}
	// The command is the first word that is neither a flag nor a global
	// flag's value.
	cmd := 1
	for cmd < len(args) {
		isFlag, _, next := flag(args[cmd])
		if !isFlag {
			break
		}
		cmd++
		if next {
			cmd++
		}
	}
	if cmd >= len(args) || args[cmd] == "--" {
		return args
	}
	var moved, rest []string
	for i := cmd; i < len(args); i++ {
		_, global, next := flag(args[i])
		switch {
		case args[i] == "--":
			return slices.Concat(args[:cmd], moved, rest, args[i:])
		case !global:
			rest = append(rest, args[i])
		case next && i+1 < len(args):
			moved = append(moved, args[i], args[i+1])
			i++
		default:
			moved = append(moved, args[i])
		}
	}
	return slices.Concat(args[:cmd], moved, rest)
}

// boolOption reads a boolean flag, or else its environment variable
// (OPTSYNC_ and the flag's name), which takes the spellings the exports'
// flags take: true/false, 1/0, yes/no, y/n, in any case.
func boolOption(c *cli.Context, name string) (bool, error) {
	if !slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), name) }) {
		return false, nil // not a flag of this command, nor its variable
	}
	if c.IsSet(name) {
		return c.Bool(name), nil
	}
	env := "OPTSYNC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	v := strings.TrimSpace(os.Getenv(env))
	switch strings.ToLower(v) {
	case "true", "1", "yes", "y":
		return true, nil
	case "", "false", "0", "no", "n":
		return false, nil
	}
	return false, usagef("%s=%q: want true/false, 1/0, yes/no or y/n", env, v)
}

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
		if err := conns.CheckOnline(ctx, &cfg.extract, out); err != nil {
			return fmt.Errorf("validate --online: %w", err)
		}
	}
	// Held to the same clock as a run: a row dated too far ahead is a reject.
	j := &job{cfg: cfg, log: log, notAfter: cfg.extract.NotAfter(time.Now().UTC())}
	return load.Validation{D365: extract.InputOf("d365", cfg.D365.Source, cfg.D365.CSV, ""), Campaign: extract.InputOf("campaign", cfg.Campaign.Source, cfg.Campaign.CSV, ""),
		Reading: j.reading(&load.Connections{}, nil, false), Budgets: j.budgets(), TmpDir: cfg.TmpDir}.Check(ctx, out)
}
