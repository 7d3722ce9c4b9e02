package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"optsync/extract"
	"optsync/transform"
)

var testPairs = []transform.Pair{
	{D365: "donotemail", Campaign: "blackListEmail"},
	{D365: "xx_sms", Campaign: "blackListMobile", Invert: true},
}

func id(n int) extract.ID {
	var i extract.ID
	i[14], i[15] = byte(n>>8), byte(n)
	return i
}

func snap(n int) transform.Snapshot {
	s := transform.Snapshot{Known: true, DModified: int64(n) * 1000, CModified: int64(n)*1000 + 7, PKey: "@pk" + string(rune('a'+n%26))}
	s.Pairs[0] = transform.PairState{S: extract.True, DRaw: extract.True, CRaw: extract.False, CWritten: extract.True}
	s.Pairs[1] = transform.PairState{S: extract.Unknown, DRaw: extract.False, CRaw: extract.Unknown, DWritten: extract.False}
	return s
}

func TestSnapshotsRoundTripAndLookupOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(0)
	// Every third contact has a snapshot; put them out of order.
	for _, n := range []int{9, 3, 0, 6, 300, 12} {
		s := snap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	has := map[int]bool{0: true, 3: true, 6: true, 9: true, 12: true, 300: true}
	// Ascending, with gaps longer than the forward walk; then backwards; then repeats.
	order := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 299, 300, 301, 12, 3, 0, 400, 6, 6}
	for _, n := range order {
		var got transform.Snapshot
		ok, err := r.Get(id(n), &got)
		if err != nil {
			t.Fatal(err)
		}
		if ok != has[n] {
			t.Fatalf("Get(%d) found=%v, want %v", n, ok, has[n])
		}
		if ok && got != snap(n) {
			t.Fatalf("Get(%d) = %+v, want %+v", n, got, snap(n))
		}
	}
}

func TestPairsKeepTheirIDsAcrossMappingChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(1)
	s := snap(1)
	b.Put(id(1), &s)
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// The second pair now comes first, and a new one joins.
	reordered := []transform.Pair{testPairs[1], {D365: "donotphone", Campaign: "blackListPhone"}, testPairs[0]}
	st, err = Open(path, reordered)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, _ := st.Reader()
	defer r.Close()
	var got transform.Snapshot
	if ok, err := r.Get(id(1), &got); !ok || err != nil {
		t.Fatalf("found=%v err=%v", ok, err)
	}
	if got.Pairs[0] != s.Pairs[1] || got.Pairs[2] != s.Pairs[0] || got.Pairs[1] != (transform.PairState{}) {
		t.Fatalf("pairs not matched by identity: %+v", got.Pairs)
	}
}

func TestLockedStateNamesTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, nil)
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || le.Started.IsZero() || le.Host == "" {
		t.Fatalf("second open: %v", err)
	}
	if h, err := lockHolder(path); err != nil || h == nil || h.PID != os.Getpid() {
		t.Fatalf("holder while held: %+v %v", h, err)
	}
	st.Close()
	// The lock file stays (removing it could let two runs hold two files),
	// but names no one once released.
	if h, err := lockHolder(path); err != nil || h != nil {
		t.Fatalf("holder after Close: %+v %v", h, err)
	}
	if b, err := os.ReadFile(path + ".lock"); err != nil || len(b) != 0 {
		t.Fatalf("lock details left behind after Close: %q %v", b, err)
	}
	st, err = Open(path, nil)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	st.Close()
}

// TestConcurrentOpensAllNameTheHolder starts many runs at once against an
// existing state: exactly one gets it, and every other is told who holds it
// (the details are written before anyone can see the lock held).
func TestConcurrentOpensAllNameTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for round := 0; round < 20; round++ {
		const n = 20
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			holders []*Store
			locked  []*LockedError
			other   []error
		)
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				st, err := Open(path, testPairs)
				mu.Lock()
				defer mu.Unlock()
				var le *LockedError
				switch {
				case err == nil:
					holders = append(holders, st)
				case errors.As(err, &le):
					locked = append(locked, le)
				default:
					other = append(other, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		for _, h := range holders {
			h.Close()
		}
		if len(other) > 0 {
			t.Fatalf("round %d: unexpected errors %v", round, other)
		}
		// Every open that found the lock held names its holder.
		for _, le := range locked {
			if le.PID != os.Getpid() || le.Host == "" || le.Started.IsZero() {
				t.Fatalf("round %d: a refused open does not name the holder: %v", round, le)
			}
		}
		if len(holders) < 1 || len(holders)+len(locked) != n {
			t.Fatalf("round %d: %d holders, %d refused", round, len(holders), len(locked))
		}
	}
}

// TestLockFileIsNotFollowed plants a link (and a second hard link) where the
// lock file goes: no open writes through it, and the target is untouched.
func TestLockFileIsNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious.txt")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, plant := range map[string]func(lock string) error{
		"symlink":   func(lock string) error { return os.Symlink(target, lock) },
		"hard link": func(lock string) error { return os.Link(target, lock) },
		"dangling":  func(lock string) error { return os.Symlink(filepath.Join(dir, "new.txt"), lock) },
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			st, err := Open(path, nil) // an existing state, as the nightly job has
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			os.Remove(path + ".lock")
			if err := plant(path + ".lock"); err != nil {
				t.Fatal(err)
			}
			if st, err := Open(path, nil); err == nil {
				st.Close()
				t.Fatal("a run opened the state through a planted lock file")
			} else if !strings.Contains(err.Error(), path+".lock") {
				t.Fatalf("the error does not name the lock file: %v", err)
			}
			if _, err := OpenReadOnly(path, nil); err == nil {
				t.Fatal("a reader went through a planted lock file")
			}
			if b, _ := os.ReadFile(target); string(b) != "keep me" {
				t.Fatalf("the link's target was changed: %q", b)
			}
			if _, err := os.Stat(filepath.Join(dir, "new.txt")); !os.IsNotExist(err) {
				t.Fatalf("a file was created through the dangling link: %v", err)
			}
		})
	}
}

// TestReadersAnswerWhileARunShares: a run that shares the file lets readers
// in, and they learn who holds the state; the run's next write waits for
// them to close.
func TestReadersAnswerWhileARunShares(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.BeginRun(&Run{ID: "r1", Started: time.Now(), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Share(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatalf("a reader while the run shares: %v", err)
	}
	if ro.Holder == nil || ro.Holder.PID != os.Getpid() {
		t.Fatalf("the reader does not know who holds the state: %+v", ro.Holder)
	}
	runs, err := ro.Runs()
	if err != nil || len(runs) != 1 || runs[0].Outcome != "running" {
		t.Fatalf("runs read while shared: %+v %v", runs, err)
	}
	if _, err := Open(path, testPairs); !errors.As(err, new(*LockedError)) {
		t.Fatalf("a second run while the first shares: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- st.EndRun(&Run{ID: "r1", Started: runs[0].Started, Outcome: "ok"}) }()
	ro.Close() // the write goes ahead once the reader is gone
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestInterruptedRunsAreMarked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, _ := Open(path, nil)
	t0 := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	if err := st.BeginRun(&Run{ID: "a", Started: t0, Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	st.Close() // as if killed: never ended
	st, _ = Open(path, nil)
	defer st.Close()
	if err := st.BeginRun(&Run{ID: "b", Started: t0.Add(time.Second), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	runs, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].ID != "b" || runs[1].ID != "a" || runs[1].Outcome != OutcomeInterrupted || runs[0].Outcome != "running" {
		t.Fatalf("runs: %+v", runs)
	}
}

// A reader that meets a commit (the file's lock held alone, as a run holds
// it while it commits) waits for it: a commit that ends within the wait
// lets it in, and one that does not makes it give up with a LockedError
// saying the state is being written and how long it waited.
func TestReaderWaitsForACommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f, syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = openReadOnly(path, testPairs, 100*time.Millisecond)
	var le *LockedError
	if !errors.As(err, &le) || !le.Writing || !strings.Contains(err.Error(), "is being written") || !strings.Contains(err.Error(), "stayed busy for 100ms") {
		t.Fatalf("a reader past its wait: %v, want a LockedError saying the state is being written", err)
	}

	opened := make(chan error, 1)
	go func() {
		ro, err := openReadOnly(path, testPairs, time.Minute)
		if ro != nil {
			ro.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("the reader did not wait for the commit: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := flock(f, syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("a reader whose commit ended within its wait: %v", err)
	}
}
