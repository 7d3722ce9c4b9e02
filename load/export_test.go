package load

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteExport(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	existing := filepath.Join(dir, "existing.csv")
	if err := os.WriteFile(existing, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.csv")
	if err := os.Symlink(existing, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		force      bool
		refused    string
	}{
		{"new", filepath.Join(dir, "new.csv"), false, ""},
		{"existing", existing, false, "state export: --output " + existing + " exists; pass --force to replace it"},
		{"existing, forced", existing, true, ""},
		{"link", link, true, "is a symbolic link"},
		{"folder", dir, true, "exists and is not a regular file"},
	} {
		err := WriteExport("state export", tc.path, tc.force, write("new"))
		var re *OutputRefusedError
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.refused != "" && (!errors.As(err, &re) || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("%s: %v, want refused: %q", tc.name, err, tc.refused)
		case tc.refused == "":
			b, _ := os.ReadFile(tc.path)
			fi, _ := os.Stat(tc.path)
			if string(b) != "new" || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %q, mode %v", tc.name, b, fi.Mode())
			}
		}
	}
	if b, _ := os.ReadFile(existing); string(b) != "new" {
		t.Errorf("the link's target was touched or not replaced by force: %q", b)
	}
}
