package state

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"optsync/extract"
	"optsync/load"
	"optsync/load/progress"
	"optsync/transform"
)

// commitChunk is how many contacts a batch of a walk takes: what the
// decider fills and hands to the writer at a time. A backfill's batch also
// carries as many keys of the PKey index, and commitBatches of them are in
// memory at once; a transaction takes one or more (txBatches). bbolt
// splits nodes only when a transaction commits, so a million puts in one
// transaction pile into one in-memory node: transactions stay small. Each
// held 16K contacts, one batch, until this sitting: 32K a transaction then
// cost more peak memory (a 1 M backfill's peak RSS 281 – 296 MB against
// 251 – 271, load 9), the batches doubling with it. Batches of 8K, up to
// eight a transaction, peak at 265 – 270 MB against 256 – 273 (load 7 –
// 12, three runs each).
const commitChunk = 1 << 13

// scatteredChunk is the chunk of a run that looks records up rather than
// walking them: its contacts lie apart in the file, each dirtying pages
// of its own (its record's, its PKey's, its pending writes'), which bbolt
// holds in memory, materialised, until the transaction commits, and which
// stay mapped until then (writeSlack). Over a 10 M state thirty nights
// old, a night peaked at 148 – 152 MB with 1,024 contacts a transaction,
// 93 – 95 MB with 512 (72 MB of it the file's pages), 79 MB with 384;
// fewer pay a sync and a release of the mapping more often.
const scatteredChunk = 384

// quietChunk is scatteredChunk where fault-around is off in the mapping
// (quiet_linux.go): a transaction then maps the pages it reads and no
// others, so it can take more contacts and a night pays fewer syncs. Over
// a 1 M state ten nights old (two or three nights each, each beside one of
// 384 contacts with fault-around on a copy of the same state, which took
// 0.98 – 1.21 s), 1,024 a transaction took 0.95 – 0.97 s, 1,536 0.89 –
// 0.93 s, 2,048 0.80 – 0.88 s (71 – 74 MB), 4,096 0.94 – 1.04 s (90 MB:
// bbolt's nodes and new pages, held until the commit), 10 k in one 1.11 –
// 1.18 s (158 MB).
const quietChunk = 2048

// commitBatches is how many batches a commit fills and writes in turn:
// with two, the deciding side waited for each commit before it decided
// the chunk after next, and a sync that took long (its latency on this
// shared disk runs from 0.2 to 60 ms) held both sides up; a third lets
// the decider run a chunk further ahead, for a batch's memory (a few MB).
const commitBatches = 3

// txBatches is how many batches of a walk one transaction takes at most:
// those ready when the one before is put go with it (txHold), so a
// writer that falls behind the decider pays bbolt's two syncs per
// transaction (3 – 10 ms each on this disk, the 1 M backfill's commit's
// largest wait) once for several chunks; one that keeps up commits each
// batch as before, rather than wait with a transaction open.
const txBatches = 8

// commitGCPercent is the collector's growth target while a backfill
// commits (unless GOGC says otherwise): the run's rows are all live then,
// and the commit's goal was the run's peak (1 M contacts: 274 MB of heap
// over 195 live at the 40 % the rest of the run collects at). The commit
// allocates little (~90 MB over a million contacts, bbolt's included):
// at 30 % the collector runs four times instead of three, and the peak
// RSS is 10 – 15 MB lower (README, Performance).
const commitGCPercent = 30

// CommitOptions is what the commit of a run's decisions needs besides them.
type CommitOptions struct {
	// Started is the run's start: an agreement that changes dates from it.
	Started time.Time
	// Final is the run's final record, committed with the last transaction
	// only (Run.Ended is set as it goes).
	Final *Final
	// PKeys, when set, is every record's (PKey, contact) after the run, in
	// PKey order: the PKey index is then written whole (see index.go),
	// dropped before the first chunk, its keys a part with each chunk of
	// records (the rest after the last), marked built by the last
	// transaction. That is how a backfill that changes most records keeps
	// it. Release, when set, lets go of the rows read once the last
	// record is decided.
	PKeys   func() (string, extract.ID, bool, error)
	Release func()
	// PKeysReady, when set, says whether PKeys can hand its keys without
	// waiting (they are being sorted): until it does, chunks of records go
	// without keys, which later chunks take on.
	PKeysReady func() bool
	// Failed holds contacts whose writes an API refused: their state
	// records what was read but not those writes (and they go to the retry
	// queue).
	Failed map[extract.ID]load.Refused
	// RunName names a run by its start (Unix ms), for pending writes.
	RunName func(int64) string
	// Chunk is the contacts per transaction (0: commitChunk in a walk,
	// else scatteredChunk); AfterChunk, when set, hears of each one
	// committed.
	Chunk      int
	AfterChunk func(n int)
	Progress   *progress.Progress
	Log        zerolog.Logger
}

// CommitDecisions records the snapshots and decisions of the entries the
// decider kept (dirty) in id order, a chunk per transaction, the run's
// final record with the last. Each chunk is decided again (d.Again) from
// state as it stands, which for these contacts is still the state the
// first pass read. Each contact's record is written whole: a run killed
// here leaves every contact either as it was (the next run decides it
// again, the same way) or as decided, and the files its decisions went to
// were complete before the first chunk.
//
// While bbolt writes one chunk, the next is decided and encoded: chunks hold
// disjoint contacts, so reading the next one beside the write is safe.
// Everything but bbolt's own work is done on the deciding side (records,
// log entries and index keys encoded and sealed), since the writing side
// is the one the commit waits for.
func (s *Store) CommitDecisions(ctx context.Context, d *transform.Decider, dirty *Dirty, o CommitOptions) error {
	bar := o.Progress.Stage("committing state", int64(dirty.Len()), "contacts")
	defer bar.Done()
	if o.PKeys != nil {
		if err := s.DropPKeyIndex(); err != nil {
			return err
		}
	}
	size, quiet := commitChunk, false
	if !d.Walk() {
		size = scatteredChunk
		var end func()
		if quiet, end = s.beginQuiet(o.Log); quiet {
			size = quietChunk
			defer end()
		}
	}
	// What the run's lookups kept is taken (while no commit came between:
	// the chunks below write other contacts than the one taken), and
	// nothing more is kept.
	c := &committer{s: s, d: d, o: o, size: cmp.Or(o.Chunk, size), bar: bar, dirty: dirty,
		free: make(chan *Batch, commitBatches), ready: make(chan chunk, commitBatches-1), tag: s.commits.Load(), slot: s.slots(), quiet: quiet}
	// A chunk asked for (o.Chunk, tests that kill between transactions)
	// is a transaction's contacts.
	c.perTx = 1
	if o.Chunk == 0 && d.Walk() {
		c.perTx = txBatches
	}
	s.reads.pause()
	defer s.reads.stop()
	if !d.Walk() {
		// the pages of the pending writes' index it will change, asked
		// for at once (warm.go)
		kept := s.reads.records()
		w := s.warm(func() []warmTree { return []warmTree{pendingTree(kept)} })
		defer w.end()
	}
	// A walk's commit runs while the rows read are held: the run's peak.
	s.release.tight.Store(d.Walk())
	defer s.release.tight.Store(false)
	scratch := &commitScratch{} // the batches commit one at a time
	for range commitBatches {
		b := s.NewBatch(min(dirty.Len(), c.size))
		b.wholePK = o.PKeys != nil
		b.scratch = scratch
		c.free <- b
	}
	if o.PKeys != nil {
		defer extract.CollectAt(commitGCPercent)()
	}
	fresh, err := s.noRecords()
	if err != nil {
		return err
	}
	c.fresh = fresh
	// The entries are read back on a goroutine of their own, beside the
	// deciding one (dirty_ahead.go).
	next, stop, err := dirty.readerAhead()
	if err != nil {
		return err
	}
	defer stop()
	if d.Walk() {
		c.fill = startPrefill(s.file, s.inUse())
		defer c.fill.stop()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.decideChunks(gctx, next) })
	g.Go(func() error { return c.writeChunks(ctx) })
	return g.Wait()
}

// committer is one commit of a run's decisions: one goroutine decides
// and encodes chunks, another writes them.
type committer struct {
	s     *Store
	d     *transform.Decider
	o     CommitOptions
	size  int
	bar   *progress.Bar
	dirty *Dirty
	free  chan *Batch
	ready chan chunk
	// perTx is how many batches a transaction takes at most (txBatches).
	perTx int
	// fill reads ahead of a walk's writes the file's part bbolt extended
	// it by (prefill.go); nil in a night's.
	fill *prefill
	// quiet: fault-around is off in the mapping, and each batch names the
	// leaves its records were found on, for its transaction to map in at
	// once (Batch.pages).
	quiet bool
	// of the deciding goroutine
	decisions []transform.Decision
	prev      transform.Snapshot
	v         transform.Verdict
	seq       uint32
	// tag is the commits made before this one began; rec the record
	// taken for the contact decided (kept_reads.go).
	tag  int64
	slot *[256]int8
	rec  record
	// fresh says the file held no record when the commit began (a first
	// backfill's): while the entries' ids increase, none of them has one,
	// and none is looked up. last is the id decided last (any: one was).
	fresh, any bool
	last       extract.ID
	// wholeLast is the key of the last block of the PKey index written
	// whole handed to a batch so far; pack cuts its entries into blocks,
	// the one it is filling going with a later batch.
	wholeLast []byte
	pack      blockPacker
	wholeKey  []byte
	// owed is how many keys of the PKey index the chunks so far left to
	// later ones (PKeysReady).
	owed int
}

type chunk struct {
	batch *Batch
	n     int  // dirty entries it covers
	last  bool // the final record goes with it
}

// decideChunks decides the kept entries again, a chunk at a time, into
// the batches free hands back; with the records of each chunk go as many
// keys of a PKey index written whole, and its keys left after the last
// record go in chunks of their own.
func (c *committer) decideChunks(ctx context.Context, next func(*transform.Entry) (bool, error)) error {
	defer close(c.ready)
	c.decisions = make([]transform.Decision, 0, extract.MaxFields)
	var e transform.Entry
	more, err := next(&e)
	whole := c.o.PKeys != nil // keys of the PKey index left to write
	for first := true; first || more || whole; first = false {
		if err != nil {
			return err
		}
		var batch *Batch
		select {
		case batch = <-c.free:
		case <-ctx.Done():
			return ctx.Err()
		}
		batch.Reset()
		var n int
		if first || more {
			if n, more, err = c.decideChunk(batch, &e, more, next); err != nil {
				return err
			}
			if !more && whole {
				// The records are decided: the rows read are not needed
				// any more. Let them go, or the collector marks them
				// again and again while the rest of the index is written.
				c.dirty.Close()
				if c.o.Release != nil {
					c.o.Release()
				}
			}
		}
		if whole {
			if whole, err = c.wholeKeys(batch, c.keysFor(n, more)); err != nil {
				return err
			}
		}
		// The index is marked built by the run's last transaction only:
		// its keys may end before the records do, and an index marked
		// built must index every record the file holds.
		last := !more && !whole
		batch.built = last && c.o.PKeys != nil
		select {
		case c.ready <- chunk{batch, n, last}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// keysFor is how many keys of the PKey index written whole go with a
// chunk of n records (more: records follow it): as many, and as many again
// of those earlier chunks left while the keys were not ready (a batch
// holds at most twice its share); after the last record, the rest in
// chunks of their own.
func (c *committer) keysFor(n int, more bool) int {
	if !more {
		return max(c.size, indexChunk)
	}
	if c.o.PKeysReady != nil && !c.o.PKeysReady() {
		c.owed += n
		return 0
	}
	pay := min(c.owed, n)
	c.owed -= pay
	return n + pay
}

// wholeKeys adds up to n keys of the PKey index written whole to batch,
// packed into blocks, and says whether keys are left. The batch's range of
// blocks starts after the previous batch's last; the one that finds no key
// left runs to the end. A block not yet full goes with a later batch (a
// batch without a full block has no range).
func (c *committer) wholeKeys(batch *Batch, n int) (left bool, err error) {
	if n <= 0 {
		return true, nil // a range needs a key to end at
	}
	batch.wholeAfter = append(batch.wholeAfter[:0], c.wholeLast...)
	c.pack.emit = batch.addWhole
	defer func() {
		if k := len(batch.wholeEnds); k > 0 {
			last, _ := batch.wholeBlock(k - 1)
			c.wholeLast = append(c.wholeLast[:0], last...)
		}
		batch.inWhole = batch.wholeToEnd || len(batch.wholeEnds) > 0
	}()
	for range n {
		pkey, id, ok, err := c.o.PKeys()
		if err != nil {
			return false, err
		}
		if !ok {
			batch.wholeToEnd = true
			return false, c.pack.flush()
		}
		c.wholeKey = appendPKeyKey(c.wholeKey[:0], pkey, id)
		if err := c.pack.add(c.wholeKey, nil); err != nil {
			return false, err
		}
	}
	return true, nil
}

// decideChunk decides up to a chunk of entries, e the first, into batch,
// against state as a new read view shows it.
func (c *committer) decideChunk(batch *Batch, e *transform.Entry, more bool, next func(*transform.Entry) (bool, error)) (n int, _ bool, err error) {
	var reader *Reader
	defer func() {
		if reader != nil {
			reader.Close()
		}
	}()
	for ; more && n < c.size; n++ {
		var old *record
		if c.fresh = c.fresh && (!c.any || c.last.Compare(e.ID) < 0); c.fresh {
			c.last, c.any = e.ID, true
		} else {
			if reader == nil {
				if reader, err = c.s.Reader(); err != nil {
					return n, false, err
				}
				reader.keep = false
			}
			if old, err = c.prior(batch, reader, e.ID); err != nil {
				return n, false, err
			}
		}
		prevPtr := &c.prev
		if old == nil {
			prevPtr = nil
		}
		forgot := c.d.Again(e, prevPtr, c.decisions[:0], &c.v)
		c.decisions = c.v.Decisions()
		if c.v.Recorded() {
			c.record(batch, old, &c.v, prevPtr, forgot)
		}
		if more, err = next(e); err != nil {
			return n, false, err
		}
	}
	return n, more, nil
}

// prior fills c.prev with the contact's record as the file holds it and
// returns that record (nil: none): the copy the run's lookup kept, when
// no commit came between, else looked up in reader.
func (c *committer) prior(batch *Batch, reader *Reader, id extract.ID) (*record, error) {
	v, found, ok, page := c.s.reads.take(id, c.tag)
	if c.quiet && page != 0 {
		batch.pages = append(batch.pages, page)
	}
	if ok {
		if !found {
			return nil, nil
		}
		rec, err := parseRecord(v)
		if err == nil {
			err = c.s.decodeRecord(&rec, &c.prev, c.slot)
		}
		if err != nil {
			return nil, &CorruptError{Path: c.s.path, Problem: fmt.Sprintf("contact %s: %v", id, err)}
		}
		c.rec = rec
		return &c.rec, nil
	}
	found, err := reader.Get(id, &c.prev)
	if err != nil || !found {
		return nil, err
	}
	c.rec = reader.rec
	return &c.rec, nil
}

// writeChunks commits the chunks as they are ready, the final record with
// the last: up to perTx in one transaction, those ready by the time the
// one before is put. A batch goes back to the decider once put (what
// bbolt keeps of it stays with the transaction: txHold).
func (c *committer) writeChunks(ctx context.Context) error {
	var hold txHold
	n := 0
	for ch := range c.ready {
		var contacts int64
		err := c.s.commitEach(ctx, func(put func(*Batch, *Final) error) error {
			for k := 1; ; k++ {
				var f *Final
				if ch.last {
					f = c.o.Final
					f.Run.Ended = time.Now().UTC() // the run's end includes its commit
				}
				if err := put(ch.batch, f); err != nil {
					return err
				}
				hold.take(ch.batch)
				contacts += int64(ch.n)
				c.free <- ch.batch // room: no more batches than it holds
				if ch.last || k == c.perTx {
					return nil
				}
				var ok bool
				select {
				case ch, ok = <-c.ready:
					if !ok {
						return nil // the decider stopped: what it handed over commits
					}
				default:
					return nil // none ready: commit rather than wait with it open
				}
			}
		})
		hold.committed()
		if err != nil {
			return err
		}
		c.fill.grown()
		if n++; c.o.AfterChunk != nil {
			c.o.AfterChunk(n)
		}
		c.bar.Add(contacts)
	}
	return nil
}

// record puts one decided entry into the batch: its new snapshot when it
// changed, and its decisions for the log. What was read is kept; writes an
// API refused are not: their pairs keep the old agreement and no write is
// pending, so the next run decides them again.
func (c *committer) record(batch *Batch, old *record, v *transform.Verdict, prevPtr *transform.Snapshot, forgot bool) {
	refused := c.o.Failed[v.ID()]
	next, decisions := v.Next(), v.Decisions()
	for _, dec := range decisions {
		if dec.Skip == "" && dec.Target == transform.ToD365 && refused.D365 == "" {
			// the write moves the record: the ETag read before it is stale
			next.DETag = ""
		}
		if dec.Skip != "" || refused.Of(dec.Target) == "" {
			continue
		}
		ps := &next.Pairs[dec.Pair]
		if dec.Target == transform.ToD365 {
			ps.DWritten, ps.DWrittenAt = extract.Unknown, 0
		} else {
			ps.CWritten, ps.CWrittenAt = extract.Unknown, 0
		}
		ps.S = extract.Unknown
		if prevPtr != nil {
			ps.S = prevPtr.Pairs[dec.Pair].S
		}
	}
	if prevPtr == nil || *next != c.prev || forgot {
		next.Decided = c.o.Started.Unix()
		// An agreement that changes dates from this run (Decided);
		// putOver keeps the date of one that does not.
		batch.putOver(v.ID(), next, old)
	}
	run := c.o.Final.Run
	for i := range decisions {
		c.seq++
		batch.AddLog(c.logEntry(run, c.seq, v, &decisions[i], refused), run.ID, c.d.Rules().Pairs)
	}
}

func (c *committer) logEntry(run *Run, seq uint32, v *transform.Verdict, dec *transform.Decision, refused load.Refused) LogEntry {
	p := c.d.Rules().Pairs[dec.Pair]
	e := LogEntry{
		RunStarted: run.Started, Seq: seq, RunID: run.ID, Contact: v.ID(), PKey: v.PKey(), Pair: dec.Pair,
		D365Field: p.D365, CampaignField: p.Campaign, Direction: dec.Target.String(), Rule: dec.Rule,
		D365Modified: dec.DModified, CampaignModified: dec.CModified, Outcome: load.Applied,
	}
	if dec.Skip != "" {
		e.Outcome, e.Error = load.Skipped, dec.Skip
		return e
	}
	e.Old, e.New = dec.Old.String(), dec.New.String()
	if dec.Pending {
		e.Outcome, e.Error = transform.OutcomePendingNotSeen, load.PendingReason(dec.Since, c.o.RunName)
		return e
	}
	if why := refused.Of(dec.Target); why != "" {
		e.Outcome, e.Error = refused.Outcome(dec.Target), why
	}
	return e
}

var _ transform.Prior = (*Reader)(nil)
