package load

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report-x.html")
	if err := WriteFile(path, func(w io.Writer) error { _, err := io.WriteString(w, "<p>ok</p>"); return err }); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if err != nil || string(b) != "<p>ok</p>" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("got %q %v, mode %v", b, err, fi.Mode().Perm())
	}
	// A writer that fails leaves neither the file nor its temporary.
	failing := filepath.Join(dir, "report-y.html")
	boom := errors.New("boom")
	if err := WriteFile(failing, func(w io.Writer) error { _, _ = io.WriteString(w, "half"); return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("after a failed write the folder holds %v", entries)
	}
}
