//go:build linux

package state

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"optsync/transform"
)

// readOnlyFD makes every later write through f fail as a failing disk
// would, at the file level: a descriptor of the same file opened to be
// read is put in f's place (dup3), so bbolt's own writes get EBADF.
func readOnlyFD(t *testing.T, f *os.File) {
	t.Helper()
	ro, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := syscall.Dup3(int(ro.Fd()), int(f.Fd()), syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// A state file is never left unopenable by a failed write. Creating one
// whose first pages cannot be written leaves nothing at the state path (it
// used to leave a 0-byte file: the next run initialised over it as a new
// state, and a reader failed with "write state.db: bad file descriptor").
// A commit whose writes fail leaves the file as the last commit left it,
// for writers and readers alike, its totals those of its records.
func TestFailedWritesLeaveTheStateOpenable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	_, err := openHooked(path, testPairs, false, false, func(f *os.File) error {
		readOnlyFD(t, f)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "bad file descriptor") {
		t.Fatalf("creating with every write failing: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a state file was left behind by a creation that failed: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) > 1 { // the lock file at most
		t.Fatalf("left behind: %v", left)
	}

	var file *os.File
	st, err := openHooked(path, testPairs, false, false, func(f *os.File) error {
		file = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(2)
	for n := 1; n <= 2; n++ {
		s := snap(n)
		b.Put(id(n), &s)
	}
	run := func(id string) *Final { return &Final{Run: &Run{ID: id, Started: time.Now(), Outcome: "ok"}} }
	if err := st.Commit(context.Background(), b, run("r1")); err != nil {
		t.Fatal(err)
	}
	readOnlyFD(t, file)
	b = st.NewBatch(2)
	for n := 3; n <= 4; n++ {
		s := snap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, run("r2")); err == nil {
		t.Fatal("a commit whose writes fail succeeded")
	}
	if err := st.EndRun(&Run{ID: "r2", Started: time.Now(), Outcome: "error"}); err == nil {
		t.Fatal("recording the run through a failing file succeeded")
	}
	st.Close()

	for _, readOnly := range []bool{true, false} {
		st, err := openHooked(path, testPairs, readOnly, false, nil)
		if err != nil {
			t.Fatalf("opening (read-only %v) after the failed commit: %v", readOnly, err)
		}
		got := map[int]bool{}
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		var s transform.Snapshot
		for n := 1; n <= 4; n++ {
			found, err := r.Get(id(n), &s)
			if err != nil {
				t.Fatal(err)
			}
			got[n] = found
		}
		r.Close()
		if !reflect.DeepEqual(got, map[int]bool{1: true, 2: true, 3: false, 4: false}) {
			t.Fatalf("after the failed commit state holds %v, want what the last commit left", got)
		}
		kept, err := st.Totals()
		if err != nil {
			t.Fatal(err)
		}
		if full, err := st.Recount(); err != nil || !reflect.DeepEqual(kept, full) {
			t.Fatalf("totals %+v, a recount %+v (%v)", kept, full, err)
		}
		st.Close()
	}
}
