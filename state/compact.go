package state

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"optsync/load"
	"optsync/load/progress"
	"optsync/transform"
)

// A night rewrites the leaves of the contacts it changed into pages the
// free list hands out, wherever in the file they lie: after some nights
// the leaves a night reads and rewrites lie apart, each read a fault and a
// page-table entry of its own, and the night slows down with the history
// (a 1 M state: 0.6 s the first night, 1.4 s thirty nights on; 0.7 s again
// once compacted, for the same drop). Compact rewrites the file in key
// order into a new one beside it and puts that in its place, as etcd's
// defragmentation does.

// compactingSuffix names the copy while it is written.
const compactingSuffix = ".compacting"

// compactChunk bounds one transaction of the copy: bbolt holds a write
// transaction's pages in memory until it commits.
const compactChunk = 16 << 20

// compactCheck is how many values are read between two checks of how much
// of the source is mapped (a release when enough is: releaseMapping). A
// file nights have scattered maps up to 16 pages around each value read
// (fault-around), so a few megabytes of values mapped over a hundred.
const compactCheck = 64

// compactFill is how full the copy's pages are: a run's commit writes its
// records' leaves 90 % full, and a copy written 100 % full had each leaf a
// night rewrites split in two.
const compactFill = 0.9

// Compact is `optsync state compact`.
type Compact struct {
	Path, OutDir string
	Pairs        []transform.Pair
	// ExitCode is the process's exit code of an error (main's one table):
	// the run's record keeps the code the command exits with.
	ExitCode func(error) int
	// Redact keeps config values out of the recorded error.
	Redact func(string) string
	Log    zerolog.Logger
	// Progress shows the copy on a terminal (nil: not shown).
	Progress *progress.Progress
}

// Run compacts the state file, records the command in the run history and
// says what it did on out. The run lock is held throughout: no run uses the
// file meanwhile, and readers keep the file they opened.
func (c Compact) Run(ctx context.Context, out io.Writer) error {
	if err := CheckKept(c.Path, c.OutDir, false); err != nil {
		return err
	}
	if _, err := os.Lstat(c.Path); err != nil {
		return fmt.Errorf("state %s: %w", c.Path, err)
	}
	host, _ := os.Hostname()
	started := time.Now().UTC()
	lock, err := acquireRunLock(c.Path, LockInfo{PID: os.Getpid(), Host: host, Started: started})
	if err != nil {
		return err
	}
	before, after, err := c.compact(ctx)
	// The record goes to whichever file is in place: the copy, or the
	// file as it was when the copy failed.
	st, oerr := openStore(c.Path, c.Pairs, false, false, nil, nil, writerWait)
	if oerr != nil {
		lock.release()
		return errors.Join(err, oerr)
	}
	st.lock = lock
	defer st.Close()
	run := &Run{ID: NewRunID(started), Command: "state compact", Started: started, Outcome: "running"}
	if rerr := st.BeginRun(run); rerr != nil {
		return errors.Join(err, rerr)
	}
	counts := map[string]int{"mb_before": int(before >> 20), "mb_after": int(after >> 20)}
	if err := st.endCommand(run, err, counts, c.ExitCode, c.Redact); err != nil {
		return err
	}
	c.Log.Info().Int64("bytes_before", before).Int64("bytes_after", after).Str("took", load.Took(time.Since(started))).Msg("state compacted")
	fmt.Fprintf(out, "compacted %s: %.1f MB before, %.1f MB after\n", c.Path, float64(before)/(1<<20), float64(after)/(1<<20))
	return nil
}

// compact copies the file (checked whole first: a damaged file is left as
// it is, not copied) into path.compacting and renames the copy into its
// place; the caller holds the run lock. A failure or a kill before the
// rename leaves the file as it was (and, after a kill, the copy, removed
// by the next compact or the next writer's open); after it, the copy is
// the state file.
func (c Compact) compact(ctx context.Context) (before, after int64, err error) {
	real, err := resolvePath(c.Path)
	if err != nil {
		return 0, 0, err
	}
	src, err := openStore(c.Path, c.Pairs, true, true, nil, nil, writerWait)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if src != nil {
			src.Close()
		}
	}()
	if err := CheckIdentity(src, c.OutDir, false); err != nil {
		return 0, 0, err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return 0, 0, fmt.Errorf("state %s: %w", c.Path, err)
	}
	before = fi.Size()
	tmp := real + compactingSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return before, 0, fmt.Errorf("state %s: removing the copy a compact left: %w", c.Path, err)
	}
	fail := func(err error) (int64, int64, error) {
		os.Remove(tmp)
		return before, 0, fmt.Errorf("state %s: compacting it (the file is unchanged): %w", c.Path, err)
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{
		FreelistType: bolt.FreelistArrayType,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			return openFile(name, flag|os.O_EXCL, mode, false)
		},
	})
	if err != nil {
		return fail(err)
	}
	// keys and values read: less than the file (page headers, free
	// pages), by an amount only a walk of every page would tell
	bar := c.Progress.Stage("compacting state", 0, "bytes")
	err = copyAll(ctx, src.db, dst, src.releaseMapping, bar.Add)
	bar.Done()
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	src.Close()
	src = nil
	// The copy starts its transactions again from the first: the record of
	// the old file's last commit would say it is behind it (againstRecord).
	// Gone (and the removal durable) first, a kill before the rename leaves
	// the old file without a record, which it does not need.
	if err := os.Remove(c.Path + committedSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(real)); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, real); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(real)); err != nil {
		return before, 0, fmt.Errorf("state %s: compacted, but its folder was not synced: %w", c.Path, err)
	}
	if fi, err = os.Stat(real); err != nil {
		return before, 0, fmt.Errorf("state %s: %w", c.Path, err)
	}
	return before, fi.Size(), nil
}

// copyAll copies every bucket of src into dst as it is (keys, values,
// nested buckets, sequences), in key order, pages compactFill full, in
// transactions of about compactChunk. release, called every compactCheck
// values, lets go of the source's pages read once enough are mapped; read
// hears of the bytes of keys and values read.
func copyAll(ctx context.Context, src, dst *bolt.DB, release func(*bolt.Tx), read func(int64)) error {
	return src.View(func(stx *bolt.Tx) error {
		c, err := newFileCopy(dst, compactChunk, compactFill)
		defer c.rollback()
		if err != nil {
			return err
		}
		n := 0
		var walk func(path [][]byte, sb *bolt.Bucket) error
		walk = func(path [][]byte, sb *bolt.Bucket) error {
			db, err := c.bucket(path)
			if err != nil {
				return err
			}
			if err := db.SetSequence(sb.Sequence()); err != nil {
				return err
			}
			return sb.ForEach(func(k, v []byte) error {
				if n++; n%compactCheck == 0 {
					release(stx)
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				if v == nil {
					if child := sb.Bucket(k); child != nil {
						return walk(append(path[:len(path):len(path)], k), child)
					}
				}
				read(int64(len(k) + len(v)))
				return c.put(path, k, v)
			})
		}
		if err := stx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk([][]byte{name}, b)
		}); err != nil {
			return err
		}
		return c.commit()
	})
}
