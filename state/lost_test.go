package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A state file gets its identity when it is created and keeps it; OpenNew
// moves a file found aside, never deleting it, and starts a new one with a
// new identity.
func TestStateIdentityAndOpenNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	id := st.ID()
	st.Close()
	if len(id) != 32 {
		t.Fatalf("identity %q", id)
	}
	ro, err := OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	if ro.ID() != id {
		t.Fatalf("read again: %q, want %q", ro.ID(), id)
	}
	ro.Close()
	old, _ := os.ReadFile(path)
	st, aside, err := OpenNew(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.ID() == id || st.ID() == "" {
		t.Fatalf("the new state has identity %q (the old one %q)", st.ID(), id)
	}
	if !strings.HasPrefix(aside, path+".replaced-") {
		t.Fatalf("moved aside to %q", aside)
	}
	if kept, _ := os.ReadFile(aside); string(kept) != string(old) {
		t.Fatalf("the file moved aside is not the old state")
	}
}
