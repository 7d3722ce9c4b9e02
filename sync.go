package main

import (
	"bytes"
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
	// The two sorts are independent; on two cores they take the time of one.
	var (
		contacts   []extract.Contact
		superseded []transform.Superseded
		profiles   []extract.Profile
		dups       []extract.Profile
		sorted     = make(chan struct{})
	)
	go func() {
		profiles, dups = transform.GroupProfiles(in.profiles)
		close(sorted)
	}()
	contacts, superseded = transform.DedupContacts(in.contacts)
	<-sorted
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

	matched := joined{contacts: contacts, profiles: profiles, pairs: make([][2]int32, 0, min(len(contacts), len(profiles)))}
	js := transform.Join(contacts, profiles, func(ci, pi int) {
		matched.pairs = append(matched.pairs, [2]int32{int32(ci), int32(pi)})
	})
	sum.addJoin(js, len(rules.Pairs))

	// load: decisions stream into the run's files as they are made; the
	// files stay under temporary names until Finish, so a safety stop (or
	// any failure) leaves nothing behind.
	w, err := load.NewWriter(load.Options{
		Dir: cfg.OutDir, RunID: runID, Pairs: rules.Pairs, Plan: j.plan,
		D365Updates: cfg.D365.Source == "csv", CampaignUpdates: cfg.Campaign.Source == "csv",
	}, started)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished {
			w.Abort()
		}
	}()
	for _, r := range rejects {
		if err := w.Reject(r); err != nil {
			return err
		}
	}
	var examples []string
	var dirty []int32
	if rules.Direction != transform.Disabled {
		dirty, err = decideAll(st, &rules, &matched, func(ch *load.Change) error {
			sum.addDecisions(ch.Decisions)
			examples = j.addExamples(examples, ch)
			return w.Change(ch)
		})
		if err != nil {
			return err
		}
	}

	// Safety: nothing is written when the run would clear too many opt-outs.
	limit := cfg.maxOptin.allowed(sum.ComparedPairs)
	if sum.OptoutsCleared > limit {
		switch {
		case j.plan:
			log.Warn().Int("opt_outs_cleared", sum.OptoutsCleared).Int("limit", limit).Msg("a backfill with these inputs would stop at safety.max_optin")
		case j.allowMassOptin:
			log.Warn().Int("opt_outs_cleared", sum.OptoutsCleared).Int("limit", limit).Msg("safety.max_optin exceeded; going on because of --allow-mass-optin")
		default:
			w.Abort()
			fmt.Fprintln(j.stdout, j.safetyMessage(sum, limit, examples))
			run.Ended, run.Outcome, run.ExitCode, run.Counts = time.Now().UTC(), "safety-stop", exitSafety, sum.counts()
			if err := st.EndRun(run); err != nil {
				return err
			}
			return withCode(exitSafety, fmt.Errorf("stopped by safety.max_optin: %d opt-outs would be cleared, limit %d; nothing was written", sum.OptoutsCleared, limit))
		}
	}
	// Every file complete and synced before state may rely on it.
	if err := w.Finish(); err != nil {
		return err
	}
	finished = true
	sum.D365Rows, sum.CampaignRows = w.D365Rows, w.CampaignRows
	for _, p := range w.Paths() {
		log.Info().Str("file", p).Msg("written")
	}
	if j.hooks.beforeCommit != nil {
		j.hooks.beforeCommit()
	}
	if !j.plan {
		run.Ended, run.Outcome, run.ExitCode, run.Counts = time.Now().UTC(), "ok", exitOK, sum.counts()
		if err := commitState(ctx, st, &rules, &matched, dirty, run); err != nil {
			run.Outcome = "running" // let the deferred recorder mark it failed
			return fmt.Errorf("committing state (the update files of this run are complete; the next run decides the contacts not yet committed again, the same way): %w", err)
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

// estimateRows sizes the record slice up front from the file's size and the
// length of its first lines, so that a large export is neither copied again
// and again as the slice grows nor given room it will not use.
func estimateRows(f *os.File) int {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0
	}
	sample := make([]byte, 64<<10)
	n, _ := f.ReadAt(sample, 0)
	lines := bytes.Count(sample[:n], []byte{'\n'})
	if lines < 2 {
		return 0
	}
	rows := fi.Size() * int64(lines) / int64(n)
	return int(min(rows+rows/50+16, 50_000_000))
}

// addExamples keeps the first opt-out clearings for a safety stop's message.
func (j *job) addExamples(examples []string, ch *load.Change) []string {
	for _, d := range ch.Decisions {
		if len(examples) == 10 {
			break
		}
		if !d.ClearsOptOut || d.Skip != "" {
			continue
		}
		p := j.cfg.rules.Pairs[d.Pair]
		field := p.Campaign
		if d.Target == transform.ToD365 {
			field = p.D365
		}
		examples = append(examples, fmt.Sprintf("contact %s profile %s: %s %s %s → %s (rule %s)",
			ch.ID, ch.PKey, d.Target, field, d.Old, d.New, d.Rule))
	}
	return examples
}

// safetyMessage names the count, the limit and the first examples.
func (j *job) safetyMessage(sum *summary, limit int, examples []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "safety stop: this run would clear %d opt-outs (true → false); safety.max_optin %s allows %d of %d compared pairs. Nothing was written.\n",
		sum.OptoutsCleared, j.cfg.maxOptin, limit, sum.ComparedPairs)
	b.WriteString("first examples:\n")
	for _, e := range examples {
		b.WriteString("  " + e + "\n")
	}
	b.WriteString("Check the inputs with `optsync plan`; rerun with --allow-mass-optin to accept them once.")
	return b.String()
}

// joined lists each contact with its one usable profile as indexes into
// the two sorted sides: pointer-free, so a million of them are 8 MB that the
// garbage collector need not scan.
type joined struct {
	contacts []extract.Contact
	profiles []extract.Profile
	pairs    [][2]int32
}

func (j *joined) at(k int32) (*extract.Contact, *extract.Profile) {
	m := j.pairs[k]
	return &j.contacts[m[0]], &j.profiles[m[1]]
}

// decideAll makes every decision of the run against the state as it was
// when the run began, hands each contact with something to write or report
// to sink, and lists the contacts whose snapshot changes: their snapshots
// are worked out again, chunk by chunk, by commitState once the files are
// safe. Nothing per decision is held in memory.
func decideAll(st *state.Store, rules *transform.Rules, matched *joined, sink func(*load.Change) error) (dirty []int32, err error) {
	var reader *state.Reader
	if st != nil {
		if reader, err = st.Reader(); err != nil {
			return nil, err
		}
		defer reader.Close()
	}
	decisions := make([]transform.Decision, 0, extract.MaxFields)
	var prev transform.Snapshot
	var ch load.Change
	for k := range matched.pairs {
		c, p := matched.at(int32(k))
		prevPtr, err := lookup(reader, c.ID, &prev)
		if err != nil {
			return nil, err
		}
		var res transform.Result
		res, decisions = transform.Decide(rules, c, p, prevPtr, decisions[:0])
		if len(decisions) > 0 {
			ch = load.Change{
				ID: c.ID, PKey: p.PKey, Decisions: decisions,
				D365After: res.D365After, CampaignAfter: res.CampaignAfter,
				D365Changed: res.D365Changed, CampaignChanged: res.CampaignChanged,
			}
			if err := sink(&ch); err != nil {
				return nil, err
			}
		}
		if prevPtr == nil || res.Next != prev {
			dirty = append(dirty, int32(k))
		}
	}
	return dirty, nil
}

// lookup returns the contact's snapshot, or nil when state has none.
func lookup(r *state.Reader, id extract.ID, into *transform.Snapshot) (*transform.Snapshot, error) {
	if r == nil {
		return nil, nil
	}
	found, err := r.Get(id, into)
	if err != nil || !found {
		return nil, err
	}
	return into, nil
}

// commitChunk is how many contacts one state transaction takes. bbolt splits
// nodes only when a transaction commits, so a million puts in one
// transaction pile into one in-memory node; 64K keep each commit small
// while fsyncs stay few.
const commitChunk = 1 << 16

// commitState records the snapshots of the dirty contacts in id order, a
// chunk per transaction, the run record with the last. Each chunk is decided
// again from state as it stands: Decide is pure, so the snapshot is the one
// the run's files were written from, and nothing needs holding in memory
// meanwhile. Each contact's record is written whole: a run killed here
// leaves every contact either as it was or as decided, and the files its
// decisions went to were complete before the first chunk.
func commitState(ctx context.Context, st *state.Store, rules *transform.Rules, matched *joined, dirty []int32, run *state.Run) error {
	batch := st.NewBatch(min(len(dirty), commitChunk))
	decisions := make([]transform.Decision, 0, extract.MaxFields)
	var prev transform.Snapshot
	for lo := 0; ; lo += commitChunk {
		hi := min(lo+commitChunk, len(dirty))
		reader, err := st.Reader()
		if err != nil {
			return err
		}
		batch.Reset()
		for _, k := range dirty[lo:hi] {
			c, p := matched.at(k)
			prevPtr, err := lookup(reader, c.ID, &prev)
			if err != nil {
				reader.Close()
				return err
			}
			var res transform.Result
			res, decisions = transform.Decide(rules, c, p, prevPtr, decisions[:0])
			if prevPtr == nil || res.Next != prev {
				batch.Put(c.ID, &res.Next)
			}
		}
		reader.Close()
		last := hi == len(dirty)
		var rec *state.Run
		if last {
			rec = run
		}
		if err := st.Commit(ctx, batch, rec); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}
