package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
	"optsync/transform"
)

// job is one backfill or plan: extract → transform → load, then state.
type job struct {
	cfg            *Config
	log            zerolog.Logger
	stdout         io.Writer
	command        string
	d365Path       string
	campaignPath   string
	replay         bool
	plan           bool
	allowMassOptin bool
	hooks          hooks
}

// inputs is what extract produced from both exports.
type inputs struct {
	contacts       []extract.Contact
	profiles       []extract.Profile
	d365Rejects    []extract.Reject
	campRejects    []extract.Reject
	d365, campaign extract.Stats
}

func newRunID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

func (j *job) run(ctx context.Context) (err error) {
	cfg := j.cfg
	if j.d365Path == "" {
		j.d365Path = cfg.D365.CSV
	}
	if j.campaignPath == "" {
		j.campaignPath = cfg.Campaign.CSV
	}
	if j.d365Path == "" || j.campaignPath == "" {
		return withCode(exitUsage, errors.New("no export to read: set d365.csv and campaign.csv in the config, or pass --d365-csv and --campaign-csv"))
	}
	started := time.Now().UTC()
	runID := newRunID(started)
	log := j.log.With().Str("run_id", runID).Str("command", j.command).Logger()
	rules := cfg.rules
	rules.Replay = j.replay

	st, err := j.openState()
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	run := &state.Run{ID: runID, Command: j.command, Started: started, Outcome: "running",
		Direction: string(rules.Direction), Policy: string(rules.Policy)}
	if !j.plan {
		if err := st.BeginRun(run); err != nil {
			return err
		}
		// Whatever stops the run from here is recorded in its history.
		defer func() {
			if err == nil || run.Outcome != "running" {
				return
			}
			run.Ended, run.Outcome, run.ExitCode, run.Error = time.Now().UTC(), "error", exitCode(err), err.Error()
			if rerr := st.EndRun(run); rerr != nil {
				log.Error().Err(rerr).Msg("recording the failed run")
			}
		}()
	}
	log.Info().Str("d365", j.d365Path).Str("campaign", j.campaignPath).Str("direction", string(rules.Direction)).
		Str("policy", string(rules.Policy)).Bool("replay", rules.Replay).Bool("plan", j.plan).Msg("run started")
	if rules.Direction == transform.Disabled {
		log.Warn().Msg("direction is disabled: nothing will move; inputs are still checked")
	}

	in, err := j.extract(ctx)
	if err != nil {
		return err
	}
	sum := newSummary(runID, j.command)
	sum.ContactRows, sum.ProfileRows = in.d365.Rows, in.campaign.Rows
	sum.Unlinked = in.campaign.Unlinked

	// transform: identity rules, then one decision per matched contact.
	contacts, superseded := transform.DedupContacts(in.contacts)
	profiles, dups := transform.GroupProfiles(in.profiles)
	rejects := slices.Concat(in.d365Rejects, in.campRejects)
	for _, s := range superseded {
		sum.Superseded++
		if !s.Bad {
			rejects = append(rejects, extract.Reject{Source: j.d365Path, Line: int(s.Line), ID: s.ID.String(),
				Reason: fmt.Sprintf("superseded: line %d is a later row for this contact", s.By)})
		}
	}
	for _, p := range dups {
		sum.DuplicateProfiles++
		rejects = append(rejects, extract.Reject{Source: j.campaignPath, Line: int(p.Line), ID: p.PKey, Reason: "duplicate-externalId"})
	}
	slices.SortStableFunc(rejects, func(a, b extract.Reject) int {
		if c := cmp.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	sum.Rejected = len(rejects)

	var reader *state.Reader
	var batch *state.Batch
	if st != nil {
		if reader, err = st.Reader(); err != nil {
			return err
		}
		defer reader.Close()
		batch = st.NewBatch()
	}
	var changes []load.Change
	decisions := make([]transform.Decision, 0, 4096)
	var prev transform.Snapshot
	var joinErr error
	js := transform.Join(contacts, profiles, func(c *extract.Contact, p *extract.Profile) {
		if joinErr != nil || rules.Direction == transform.Disabled {
			return
		}
		found := false
		if reader != nil {
			if found, joinErr = reader.Get(c.ID, &prev); joinErr != nil {
				return
			}
		}
		prevPtr := &prev
		if !found {
			prevPtr = nil
		}
		n := len(decisions)
		var res transform.Result
		res, decisions = transform.Decide(&rules, c, p, prevPtr, decisions)
		if len(decisions) > n {
			changes = append(changes, load.Change{ID: c.ID, PKey: p.PKey, Decisions: decisions[n:len(decisions):len(decisions)], Result: res})
		}
		if batch != nil && (!found || res.Next != prev) {
			batch.Put(c.ID, &res.Next)
		}
	})
	if joinErr != nil {
		return joinErr
	}
	sum.addJoin(js, len(rules.Pairs))
	for i := range changes {
		sum.addDecisions(changes[i].Decisions)
	}

	// Safety: nothing is written when the run would clear too many opt-outs.
	limit := cfg.maxOptin.allowed(sum.ComparedPairs)
	if sum.OptoutsCleared > limit {
		msg := j.safetyMessage(sum, limit, changes)
		switch {
		case j.plan:
			log.Warn().Int("opt_outs_cleared", sum.OptoutsCleared).Int("limit", limit).Msg("a backfill with these inputs would stop at safety.max_optin")
		case j.allowMassOptin:
			log.Warn().Int("opt_outs_cleared", sum.OptoutsCleared).Int("limit", limit).Msg("safety.max_optin exceeded; going on because of --allow-mass-optin")
		default:
			fmt.Fprintln(j.stdout, msg)
			run.Ended, run.Outcome, run.ExitCode, run.Counts = time.Now().UTC(), "safety-stop", exitSafety, sum.counts()
			if err := st.EndRun(run); err != nil {
				return err
			}
			return withCode(exitSafety, fmt.Errorf("stopped by safety.max_optin: %d opt-outs would be cleared, limit %d; nothing was written", sum.OptoutsCleared, limit))
		}
	}

	// load: every file complete and synced before state may rely on it.
	w, err := load.NewWriter(load.Options{
		Dir: cfg.OutDir, RunID: runID, Pairs: rules.Pairs, Plan: j.plan,
		D365Updates: cfg.D365.Source == "csv", CampaignUpdates: cfg.Campaign.Source == "csv",
	}, started)
	if err != nil {
		return err
	}
	if err := j.write(w, rejects, changes); err != nil {
		w.Abort()
		return err
	}
	if err := w.Finish(); err != nil {
		return err
	}
	sum.D365Rows, sum.CampaignRows = w.D365Rows, w.CampaignRows
	for _, p := range w.Paths() {
		log.Info().Str("file", p).Msg("written")
	}
	if j.hooks.beforeCommit != nil {
		j.hooks.beforeCommit()
	}
	if !j.plan {
		if reader != nil {
			reader.Close()
			reader = nil
		}
		run.Ended, run.Outcome, run.ExitCode, run.Counts = time.Now().UTC(), "ok", exitOK, sum.counts()
		if err := st.Commit(ctx, batch, run); err != nil {
			run.Outcome = "running" // let the deferred recorder mark it failed
			return fmt.Errorf("committing state (the update files of this run are complete; the next run decides these contacts again): %w", err)
		}
	}
	line := sum.line(time.Since(started))
	fmt.Fprintln(j.stdout, line)
	log.Info().Interface("counts", sum.counts()).Dur("took", time.Since(started)).Msg("run finished")
	return nil
}

func (j *job) openState() (*state.Store, error) {
	if j.plan {
		// plan changes nothing, not even a first empty state file.
		if _, err := os.Stat(j.cfg.State); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return state.OpenReadOnly(j.cfg.State, j.cfg.rules.Pairs)
	}
	return state.Open(j.cfg.State, j.cfg.rules.Pairs)
}

// extract reads both exports at once; they are independent files.
func (j *job) extract(ctx context.Context) (*inputs, error) {
	in := &inputs{}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		f, err := openInput(j.d365Path)
		if err != nil {
			return err
		}
		defer f.Close()
		in.contacts = make([]extract.Contact, 0, estimateRows(f))
		in.d365, err = extract.ReadContacts(ctx, f, j.d365Path, j.cfg.d365Layout(),
			func(c *extract.Contact) { in.contacts = append(in.contacts, *c) },
			func(r extract.Reject) { in.d365Rejects = append(in.d365Rejects, r) })
		return err
	})
	g.Go(func() error {
		f, err := openInput(j.campaignPath)
		if err != nil {
			return err
		}
		defer f.Close()
		in.profiles = make([]extract.Profile, 0, estimateRows(f))
		in.campaign, err = extract.ReadProfiles(ctx, f, j.campaignPath, j.cfg.campaignLayout(),
			func(p *extract.Profile) { in.profiles = append(in.profiles, *p) },
			func(r extract.Reject) { in.campRejects = append(in.campRejects, r) })
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	j.log.Info().Int("rows", in.d365.Rows).Int("rejected", in.d365.Rejected).Str("file", j.d365Path).Msg("read Dynamics contacts")
	j.log.Info().Int("rows", in.campaign.Rows).Int("rejected", in.campaign.Rejected).Int("without_externalId", in.campaign.Unlinked).
		Str("file", j.campaignPath).Msg("read Campaign profiles")
	return in, nil
}

func openInput(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, withCode(exitUsage, fmt.Errorf("input %s does not exist", path))
	}
	if err != nil {
		return nil, fmt.Errorf("opening input %s: %w", path, err)
	}
	return f, nil
}

// estimateRows sizes the record slice up front so that a large export is
// not copied again and again as it grows: exports run 70–120 bytes a row.
func estimateRows(f *os.File) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	return int(min(fi.Size()/80, 50_000_000))
}

func (j *job) write(w *load.Writer, rejects []extract.Reject, changes []load.Change) error {
	for _, r := range rejects {
		if err := w.Reject(r); err != nil {
			return err
		}
	}
	for i := range changes {
		if err := w.Change(&changes[i]); err != nil {
			return err
		}
	}
	return nil
}

// safetyMessage names the count, the limit and the first examples.
func (j *job) safetyMessage(sum *summary, limit int, changes []load.Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "safety stop: this run would clear %d opt-outs (true → false); safety.max_optin %s allows %d of %d compared pairs. Nothing was written.\n",
		sum.OptoutsCleared, j.cfg.maxOptin, limit, sum.ComparedPairs)
	b.WriteString("first examples:\n")
	shown := 0
	for i := range changes {
		for _, d := range changes[i].Decisions {
			if !d.ClearsOptOut || d.Skip != "" || shown == 10 {
				continue
			}
			p := j.cfg.rules.Pairs[d.Pair]
			field := p.Campaign
			if d.Target == transform.ToD365 {
				field = p.D365
			}
			fmt.Fprintf(&b, "  contact %s profile %s: %s %s %s → %s (rule %s)\n",
				changes[i].ID, changes[i].PKey, d.Target, field, d.Old, d.New, d.Rule)
			shown++
		}
	}
	b.WriteString("Check the inputs with `optsync plan`; rerun with --allow-mass-optin to accept them once.")
	return b.String()
}
