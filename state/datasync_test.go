package state

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDatasync(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"first line\n", "other line\n"} {
		if _, err := f.WriteAt([]byte(line), 0); err != nil {
			t.Fatal(err)
		}
		if err := datasync(f); err != nil {
			t.Fatalf("datasync: %v", err)
		}
		if b, err := os.ReadFile(f.Name()); err != nil || string(b) != line {
			t.Fatalf("read back %q, %v; want %q", b, err, line)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// a sync that cannot run says so: the caller must not take it as done
	if err := datasync(f); err == nil {
		t.Fatal("datasync of a closed file: no error")
	}
}
