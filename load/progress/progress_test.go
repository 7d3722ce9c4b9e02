package progress

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// output is what p has written to buf so far, read under p's lock: a bar of
// unknown total draws from its own goroutine.
func output(p *Progress, buf *bytes.Buffer) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return buf.String()
}

// lastLine is the text after the last line erase: the line a stage left.
func lastLine(out string) string {
	return out[strings.LastIndex(out, eraseLine)+len(eraseLine):]
}

func TestProgressDisabledWritesNothing(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, false)
	for _, total := range []int64{0, 1000} {
		for _, unit := range []string{"rows", "bytes"} {
			s := p.Stage("reading d365.csv", total, unit)
			for range 100_000 {
				s.Add(1)
			}
			s.Add(1 << 40)
			if _, err := io.Copy(io.Discard, s.Reader(strings.NewReader("a,b\n1,2\n"))); err != nil {
				t.Fatal(err)
			}
			s.Done()
			s.Done()
		}
	}
	if buf.Len() != 0 {
		t.Fatalf("disabled progress wrote %q", buf.String())
	}

	// A nil *Progress (a job built without one) is disabled too.
	var none *Progress
	s := none.Stage("decisions", 10, "contacts")
	s.Add(5)
	s.Done()

	// Nor does enabled draw on a nil writer.
	if s := New(nil, true).Stage("x", 1, "rows"); s != nil {
		t.Fatal("New(nil, true) draws")
	}
}

func TestProgressDisabledReaderIsTheReader(t *testing.T) {
	r := strings.NewReader("x")
	if got := New(io.Discard, false).Stage("x", 1, "bytes").Reader(r); got != io.Reader(r) {
		t.Fatalf("disabled Reader wrapped the reader: %T", got)
	}
}

func TestProgressKnownTotal(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, true)
	s := p.Stage("reading contacts", 5000, "rows")
	for range 5000 {
		s.Add(1)
	}
	s.Done()
	out := output(p, &buf)
	// The bar drew: its name, a percentage and a count of the total.
	for _, want := range []string{"reading contacts:", "% |", "/5000", "rows/"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
	// And the stage left one line with its count and rate.
	if re := regexp.MustCompile(`^reading contacts: 5000 rows in \S+ \(\d+ rows/s\)\n$`); !re.MatchString(lastLine(out)) {
		t.Errorf("last line %q does not match %s", lastLine(out), re)
	}
}

func TestProgressUnknownTotal(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, true)
	s := p.Stage("decisions", 0, "contacts")
	for range 12345 {
		s.Add(1)
	}
	s.Done()
	out := output(p, &buf)
	if strings.Contains(out, "%") {
		t.Errorf("a bar of unknown total shows a percentage: %q", out)
	}
	if !strings.Contains(out, "decisions:") || !strings.Contains(out, "contacts/") {
		t.Errorf("the spinner did not draw the name and a rate: %q", out)
	}
	if re := regexp.MustCompile(`^decisions: 12345 contacts in \S+ \(\d+ contacts/s\)\n$`); !re.MatchString(lastLine(out)) {
		t.Errorf("last line %q does not match %s", lastLine(out), re)
	}
}

func TestProgressStageEndedEarlyOrPastItsTotal(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, true)
	s := p.Stage("writes", 1000, "rows")
	s.Add(400)
	s.Done()
	if got, want := lastLine(output(p, &buf)), "writes: 400 of 1000 rows in "; !strings.HasPrefix(got, want) {
		t.Errorf("last line %q, want it to start %q", got, want)
	}

	s = p.Stage("reading export", 100, "rows")
	for range 1000 {
		s.Add(1)
	}
	s.Done()
	if got, want := lastLine(output(p, &buf)), "reading export: 1000 rows in "; !strings.HasPrefix(got, want) {
		t.Errorf("last line %q, want it to start %q", got, want)
	}
}

func TestProgressReaderCountsBytes(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	var buf bytes.Buffer
	p := New(&buf, true)
	s := p.Stage("reading d365.csv", int64(len(data)), "bytes")
	// Reads of uneven sizes, as through a bufio.Reader over a file.
	n, err := io.Copy(io.Discard, s.Reader(iotest.HalfReader(bytes.NewReader(data))))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("copied %d, %v; want %d", n, err, len(data))
	}
	if got := s.n.Load(); got != int64(len(data)) {
		t.Fatalf("the stage counted %d bytes, want %d", got, len(data))
	}
	s.Done()
	out := output(p, &buf)
	if !strings.Contains(out, "reading d365.csv:") || !strings.Contains(out, "/1.0 MB") {
		t.Errorf("the bar did not draw bytes of the total: %q", out)
	}
	if re := regexp.MustCompile(`^reading d365\.csv: 1\.0 MB in \S+ \(\d+(\.\d)? [kMGT]?B/s\)\n$`); !re.MatchString(lastLine(out)) {
		t.Errorf("last line %q does not match %s", lastLine(out), re)
	}
}

func TestProgressReaderPassesErrors(t *testing.T) {
	p := New(io.Discard, true)
	s := p.Stage("reading", 0, "bytes")
	defer s.Done()
	r := s.Reader(iotest.TimeoutReader(strings.NewReader("abc")))
	b := make([]byte, 10)
	if n, err := r.Read(b); n != 3 || err != nil {
		t.Fatalf("first read: %d, %v", n, err)
	}
	if _, err := r.Read(b); err != iotest.ErrTimeout {
		t.Fatalf("second read: %v, want %v", err, iotest.ErrTimeout)
	}
	if got := s.n.Load(); got != 3 {
		t.Fatalf("counted %d bytes, want 3", got)
	}
}

// Two stages at once share one terminal line: the first draws, the second
// counts without drawing until the line is free.
func TestProgressConcurrentStagesShareTheLine(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, true)
	p.throttle = 0 // every push draws: what is drawn does not depend on timing
	a := p.Stage("alpha", 1000, "rows")
	b := p.Stage("beta", 1000, "rows")
	a.Add(10)
	b.Add(20)
	if out := output(p, &buf); strings.Contains(out, "beta") {
		t.Fatalf("beta drew while alpha had the line: %q", out)
	}
	a.Done()
	mark := len(output(p, &buf))
	b.Add(500) // past any step: b pushes, draws and takes the line
	if out := output(p, &buf)[mark:]; !strings.Contains(out, "beta:") || !strings.Contains(out, "/1000") {
		t.Fatalf("beta did not take the line when alpha ended: %q", out)
	}
	c := p.Stage("gamma", 0, "rows")
	c.Add(7)
	c.Done() // leaves its line above beta's bar, without having drawn
	if out := output(p, &buf); strings.Count(out, "gamma:") != 1 || !strings.Contains(out, "gamma: 7 rows in ") {
		t.Fatalf("gamma drew, or did not leave its line: %q", out)
	}
	b.Done()
	out := output(p, &buf)
	if !strings.HasPrefix(lastLine(out), "beta: 520 of 1000 rows in ") {
		t.Fatalf("beta's end: %q", lastLine(out))
	}
	if strings.Count(out, "\n") != 3 {
		t.Fatalf("want three summary lines, got %q", out)
	}
}

func TestStageAddConcurrent(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, true)
	s := p.Stage("writes", 0, "rows")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20_000 {
				s.Add(1)
			}
		})
	}
	wg.Wait()
	s.Done()
	s.Add(1) // after Done: ignored, and no redraw
	if got := s.n.Load(); got != 160_001 {
		t.Fatalf("counted %d", got)
	}
	if !strings.HasPrefix(lastLine(output(p, &buf)), "writes: 160000 rows in ") {
		t.Fatalf("last line %q", lastLine(output(p, &buf)))
	}
}

func TestStageAddDisabledAllocatesNothing(t *testing.T) {
	p := New(io.Discard, false)
	r := strings.NewReader("")
	allocs := testing.AllocsPerRun(1000, func() {
		s := p.Stage("decisions", 1000, "rows")
		s.Add(1)
		_ = s.Reader(r)
		s.Done()
	})
	if allocs != 0 {
		t.Fatalf("disabled progress allocates %.1f per stage", allocs)
	}
}

func TestProgressIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Error("a bytes.Buffer is a terminal")
	}
	if IsTerminal(nil) || IsTerminal((*os.File)(nil)) {
		t.Error("nil is a terminal")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is a terminal")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if IsTerminal(pw) {
		t.Error("a pipe (stderr under cron, or piped to a log) is a terminal")
	}
}

func BenchmarkStageAddDisabled(b *testing.B) {
	s := New(io.Discard, false).Stage("decisions", 0, "rows")
	b.ReportAllocs()
	for b.Loop() {
		s.Add(1)
	}
	s.Done()
}

func BenchmarkStageAddEnabled(b *testing.B) {
	s := New(io.Discard, true).Stage("decisions", 0, "rows")
	b.ReportAllocs()
	for b.Loop() {
		s.Add(1)
	}
	s.Done()
}

// TestLogger: a log line is JSON off a terminal, plain text when asked;
// a format or level that is none is refused naming its flag.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, false)
	for _, tc := range []struct{ format, level, want string }{
		{"auto", "info", `{"level":"info"`}, {"json", "debug", `{"level":"info"`}, {"console", "info", "INF hello"},
		{"auto", "warn", ""}, {"xml", "info", `--log-format "xml": want auto, json or console`}, {"json", "loud", `--log-level "loud": want trace`},
		{"json", "", `--log-level "": want trace`},
	} {
		buf.Reset()
		log, err := p.Logger(&buf, tc.format, tc.level)
		log.Info().Msg("hello")
		got := buf.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("%s/%s: %q, want %q", tc.format, tc.level, got, tc.want)
		}
	}
}
