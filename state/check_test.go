package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An error of the commit itself (a write or fdatasync the disk refuses)
// names the state file, not only "input/output error".
func TestCommitErrorNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optsync.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.file.Close() // every write and sync of the commit now fails
	err = s.EndRun(&Run{ID: "r1", Started: time.Now(), Outcome: "ok"})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "committing") {
		t.Fatalf("err %v, want one naming %s", err, path)
	}
}

// An empty file at the state path is not taken for a new state: it is
// what a truncation leaves.
func TestEmptyStateFileIsDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optsync.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func(string) error{
		func(p string) error {
			s, err := Open(p, nil)
			if s != nil {
				s.Close()
			}
			return err
		},
		func(p string) error {
			s, err := OpenReadOnly(p, nil)
			if s != nil {
				s.Close()
			}
			return err
		},
	} {
		var ce *CorruptError
		if err := open(path); !errors.As(err, &ce) || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("err %v", err)
		}
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Fatal("the empty file was initialised")
	}
}
