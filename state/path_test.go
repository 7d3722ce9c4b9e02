package state

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"optsync/transform"
)

// A state path that is a link is used only when it resolves to an existing
// regular file; state is never created through a link, and what a link
// points at is otherwise left as it was.
func TestStatePathLinks(t *testing.T) {
	t.Run("link to an existing state file is used", func(t *testing.T) {
		volume := filepath.Join(t.TempDir(), "optsync.db")
		st, err := Open(volume, testPairs)
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		link := filepath.Join(t.TempDir(), "optsync.db")
		if err := os.Symlink(volume, link); err != nil {
			t.Fatal(err)
		}
		for _, open := range []func(string, []transform.Pair) (*Store, error){Open, OpenReadOnly} {
			st, err := open(link, testPairs)
			if err != nil {
				t.Fatalf("through the link: %v", err)
			}
			st.Close()
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("the link is no longer a link: %v %v", fi, err)
		}
	})
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
		says   string
	}{
		{"dangling link", func(t *testing.T) string { return filepath.Join(t.TempDir(), "elsewhere.db") }, "does not exist"},
		{"link to a folder", func(t *testing.T) string { return t.TempDir() }, "not a regular file"},
		{"link to a fifo", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target(t)
			before, _ := os.Lstat(target)
			link := filepath.Join(t.TempDir(), "optsync.db")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			for _, open := range []func(string, []transform.Pair) (*Store, error){Open, OpenReadOnly} {
				st, err := open(link, testPairs)
				if err == nil {
					st.Close()
					t.Fatal("no error")
				}
				if !strings.Contains(err.Error(), tc.says) {
					t.Errorf("err = %v, want it to say %q", err, tc.says)
				}
			}
			after, err := os.Lstat(target)
			if before == nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s was created through the link", target)
			}
			if before != nil && (err != nil || after.Mode() != before.Mode() || after.Size() != before.Size()) {
				t.Errorf("%s changed: %v → %v", target, before, after)
			}
		})
	}
	t.Run("folder at the path", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "optsync.db")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p, testPairs); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("err = %v", err)
		}
	})
}

// A link planted after the path was looked at is not followed either: the
// open fails rather than create or write the state elsewhere.
func TestStateOpenFileFollowsNoLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "victim")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "optsync.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if f, err := openFile(link, os.O_RDWR|os.O_CREATE, 0o600, false); err == nil {
		f.Close()
		t.Fatal("opened through a link")
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("target now %q", b)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Errorf("target mode now %v", fi.Mode())
	}
}

// A state file found 0644 is 0600 once a run has opened it; a reader
// leaves it as it is.
func TestStateFileMadePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optsync.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("a reader changed the mode to %v", fi.Mode())
	}
	st, err = Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after a run opened it, want 0600", fi.Mode())
	}
}
