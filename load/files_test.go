package load

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"optsync/extract"
	"optsync/fixtures/testkit"
)

func writeString(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// victim is a file outside the folder that a planted link points at: it
// must come out of every write as it went in.
func victim(t *testing.T) (path string, check func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "precious" || mode(t, path).Perm() != 0o644 {
			t.Errorf("link target changed: %q %v, mode %v", b, err, mode(t, path))
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report-x.html")
	if err := WriteFile(path, FileOptions{}, writeString("<p>ok</p>")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "<p>ok</p>" || mode(t, path).Perm() != 0o600 {
		t.Fatalf("got %q %v, mode %v", b, err, mode(t, path))
	}
	// A writer that fails leaves neither the file nor its temporary.
	failing := filepath.Join(dir, "report-y.html")
	boom := errors.New("boom")
	if err := WriteFile(failing, FileOptions{}, func(w io.Writer) error { _, _ = io.WriteString(w, "half"); return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("after a failed write the folder holds %v", entries)
	}
}

// What is at the file's name before it is written — a link, a link
// dangling to where a file would be created, a file of a looser mode — is
// replaced: a link itself, never its target.
func TestWriteFileReplacesWhatIsThere(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, path string) (check func())
		opt   FileOptions
		want  os.FileMode
	}{
		{name: "link to a file", plant: func(t *testing.T, path string) func() {
			target, check := victim(t)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
			return check
		}, want: 0o600},
		{name: "dangling link", plant: func(t *testing.T, path string) func() {
			target := filepath.Join(t.TempDir(), "created-through-the-link")
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
			return func() {
				if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("a file was created through the link: %v", err)
				}
			}
		}, want: 0o600},
		{name: "0644 file", plant: func(t *testing.T, path string) func() {
			if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, want: 0o600},
		{name: "0644 on purpose", opt: FileOptions{Mode: 0o644}, plant: func(t *testing.T, path string) func() {
			old := syscall.Umask(0o077) // the mode asked for, whatever the umask
			t.Cleanup(func() { syscall.Umask(old) })
			return func() {}
		}, want: 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f.csv")
			check := tc.plant(t, path)
			if err := WriteFile(path, tc.opt, writeString("new")); err != nil {
				t.Fatal(err)
			}
			check()
			if m := mode(t, path); !m.IsRegular() || m.Perm() != tc.want {
				t.Errorf("%s is %v, want a regular file %v", path, m, tc.want)
			}
			if b, _ := os.ReadFile(path); string(b) != "new" {
				t.Errorf("content %q", b)
			}
			if names(t, dir)[0] != "f.csv" || len(names(t, dir)) != 1 {
				t.Errorf("folder holds %v", names(t, dir))
			}
		})
	}
}

// NoReplace refuses any existing name, a link above all, and leaves it and
// what it points to as they were.
func TestWriteFileNoReplace(t *testing.T) {
	for _, kind := range []string{"file", "link", "dangling link"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "export.csv")
			target, check := victim(t)
			switch kind {
			case "file":
				if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
					t.Fatal(err)
				}
				target = path
			case "link":
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
			case "dangling link":
				target = filepath.Join(t.TempDir(), "nothing")
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
				check = func() {
					if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("a file was created through the link: %v", err)
					}
				}
			}
			err := WriteFile(path, FileOptions{NoReplace: true}, writeString("new"))
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("err = %v, want ErrExist", err)
			}
			check()
			if got := names(t, dir); len(got) != 1 {
				t.Errorf("folder holds %v (a temporary left behind?)", got)
			}
		})
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "new.csv")
	if err := WriteFile(path, FileOptions{NoReplace: true}, writeString("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" || mode(t, path).Perm() != 0o600 || len(names(t, dir)) != 1 {
		t.Errorf("got %q mode %v, folder %v", b, mode(t, path), names(t, dir))
	}
}

// out_dir is made 0700 however it was found, and its owner must be the
// user the job runs as.
func TestOutDir(t *testing.T) {
	base := t.TempDir()
	loose := filepath.Join(base, "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o777); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(base, "a", "b", "out")
	for _, p := range []string{loose, fresh} {
		d, err := OutDir(p)
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		if m := mode(t, p); m.Perm() != 0o700 {
			t.Errorf("%s is %v, want 0700", p, m)
		}
	}

	// A folder of another user is refused, as it is: its owner could open
	// it up again whenever they like.
	foreign := filepath.Join(base, "foreign")
	if err := os.Mkdir(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(foreign, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	} else {
		foreign = "/" // root's
	}
	before := mode(t, foreign)
	d, err := OutDir(foreign)
	if err == nil {
		d.Close()
		t.Fatalf("OutDir(%s) of another user: no error", foreign)
	}
	if !strings.Contains(err.Error(), "belongs to user id") {
		t.Errorf("err = %v", err)
	}
	if after := mode(t, foreign); after != before {
		t.Errorf("%s went from %v to %v", foreign, before, after)
	}
}

// Links planted in out_dir — at the names a run's files had before, at
// their final names, and at a final name while the run writes (between
// create and rename) — are never written through; the run's files replace
// the links at their names.
func TestWriterPlantedLinks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	var checks []func()
	plant := func(name string) {
		target, check := victim(t)
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		checks = append(checks, check)
	}
	for _, n := range []string{"audit-R.csv.partial", "rejects-R.csv.partial", "d365-updates-R.csv.partial", "audit-R.csv", "rejects-R.csv"} {
		plant(n)
	}
	w, err := NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, D365Updates: true, CampaignUpdates: true}, decided)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Reject(extract.Reject{Source: extract.File("d365"), Line: 2, Reason: "bad guid"}); err != nil {
		t.Fatal(err)
	}
	// A co-tenant quick enough to have got in before the folder was
	// tightened plants at the final names while the run writes.
	plant("d365-updates-R.csv")
	plant("campaign-updates-R.csv")
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		c()
	}
	for _, n := range []string{"audit-R.csv", "rejects-R.csv", "d365-updates-R.csv", "campaign-updates-R.csv"} {
		if m := mode(t, filepath.Join(dir, n)); !m.IsRegular() || m.Perm() != 0o600 {
			t.Errorf("%s is %v, want a regular 0600 file", n, m)
		}
	}
	if got := testkit.ReadRaggedRecords(t, filepath.Join(dir, "rejects-R.csv")); len(got) != 2 {
		t.Errorf("rejects: %q", got)
	}
	if m := mode(t, dir); m.Perm() != 0o700 {
		t.Errorf("out_dir is %v, want 0700", m)
	}
}
