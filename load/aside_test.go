package load

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"optsync/extract/spill"
)

type failAfter struct {
	ok  int // writes that succeed
	got bytes.Buffer
}

var errDiskFull = errors.New("disk full")

func (f *failAfter) Write(p []byte) (int, error) {
	if f.ok == 0 {
		return 0, errDiskFull
	}
	f.ok--
	return f.got.Write(p)
}

// What is handed to the writer reaches the file in order, each buffer
// copied (the caller reuses its own), and a write that fails on the
// writer's goroutine is returned by a later Write and by wait, never
// dropped.
func TestAsideWriter(t *testing.T) {
	t.Run("in order", func(t *testing.T) {
		f := &failAfter{ok: 100}
		a := newAsideWriter(f)
		var want bytes.Buffer
		buf := make([]byte, 5)
		for i := range 50 {
			for k := range buf {
				buf[k] = byte(i + k)
			}
			want.Write(buf)
			if n, err := a.Write(buf); n != len(buf) || err != nil {
				t.Fatalf("write %d: %d, %v", i, n, err)
			}
		}
		if err := a.wait(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.got.Bytes(), want.Bytes()) {
			t.Fatalf("the file holds %x, want %x", f.got.Bytes(), want.Bytes())
		}
	})
	t.Run("a failed write", func(t *testing.T) {
		a := newAsideWriter(&failAfter{ok: 1})
		if _, err := a.Write([]byte("first")); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Write([]byte("second")); err != nil { // fails beside the caller
			t.Fatal(err)
		}
		if _, err := a.Write([]byte("third")); !errors.Is(err, errDiskFull) {
			t.Fatalf("the write after a failed one: %v, want %v", err, errDiskFull)
		}
		if err := a.wait(); !errors.Is(err, errDiskFull) {
			t.Fatalf("wait: %v, want %v", err, errDiskFull)
		}
	})
	t.Run("a file past the page cache", func(t *testing.T) {
		f, err := os.Create(filepath.Join(t.TempDir(), "out.csv"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := spill.NewDirect(f, 4096); !ok {
			t.Skip("the test's folder does not take O_DIRECT")
		}
		// the probe set O_DIRECT: off again, as the file is made
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, fl); err != nil {
			t.Fatal(err)
		}
		a := newAsideWriter(f)
		var want bytes.Buffer
		for i, n := range []int{asideBuffer, asideBuffer, asideBuffer, asideBuffer, 7, asideBuffer, 3 * asideBuffer / 2, 4096, 1} {
			b := bytes.Repeat([]byte{byte('a' + i)}, n)
			want.Write(b)
			if _, err := a.Write(b); err != nil {
				t.Fatal(err)
			}
			if i == 5 {
				// flushed midway (a spool read back), then written on
				if err := a.flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := a.flush(); err != nil {
			t.Fatal(err)
		}
		if a.direct == nil {
			t.Fatalf("%d bytes written, all through the page cache", want.Len())
		}
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("the file holds %d bytes, not the %d written", len(got), want.Len())
		}
	})
	t.Run("a small file through the page cache", func(t *testing.T) {
		f, err := os.Create(filepath.Join(t.TempDir(), "report.html"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		a := newAsideWriter(f)
		for range 3 {
			if _, err := a.Write(bytes.Repeat([]byte{'x'}, asideBuffer)); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.flush(); err != nil {
			t.Fatal(err)
		}
		if a.direct != nil {
			t.Fatal("a file under asideDirectFrom was written past the page cache")
		}
		if st, err := f.Stat(); err != nil || st.Size() != 3*asideBuffer {
			t.Fatalf("the file: %v, %v", st, err)
		}
	})
}
