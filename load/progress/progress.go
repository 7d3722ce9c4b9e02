// Package progress is the progress display of a run, for a person watching
// a terminal: under cron, or whenever stderr is not a terminal, New is
// called with enabled false and nothing of this package writes a byte.
// On a terminal, each long stage (rows read per export, decisions, writes)
// gets a progressbar line with its count and rate, replaced when the stage
// ends by one summary line that stays:
//
//	reading d365.csv: 48.2 MB in 2.1s (23.0 MB/s)
//	decisions: 1000000 contacts in 1.3s (769231 contacts/s)
//
// Stages may run at once (the two exports are read concurrently), but a
// terminal has one line to redraw: the first stage to draw owns it and the
// others count silently, print their summary line above it when they end, and
// the next one to draw takes the line over when its owner ends. The
// process's log lines go through it too (Logger), so that they clear the
// bar's line before they print.
package progress

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

const (
	// progressThrottle is the least time between two redraws of a bar.
	progressThrottle = 100 * time.Millisecond
	// flushEvery is how often, roughly, a stage hands its count to its bar.
	// Add counts in an atomic and only every step-th unit does the rest; the
	// step adapts so that this happens about every flushEvery, whether a
	// stage adds a million rows a second or three.
	flushEvery = 50 * time.Millisecond
	maxStep    = 1 << 30
	// eraseLine goes back to the start of the line and clears it.
	eraseLine = "\r\x1b[2K"
)

// Progress shows long stages on a terminal and is silent everywhere else.
// The zero value and a nil *Progress are disabled.
type Progress struct {
	throttle time.Duration // least time between redraws; tests set 0

	mu    sync.Mutex // guards w, owner and every Bar.closed
	w     io.Writer  // nil when disabled
	fd    int        // w's descriptor, to ask its width; -1 if w is no *os.File
	owner *Bar       // the stage drawing on w's current line, if any
}

// New returns a reporter drawing on w only when enabled is true;
// callers pass enabled = IsTerminal(w).
func New(w io.Writer, enabled bool) *Progress {
	if !enabled || w == nil {
		return &Progress{}
	}
	p := &Progress{throttle: progressThrottle, w: w, fd: -1}
	if f, ok := w.(*os.File); ok && f != nil {
		p.fd = int(f.Fd())
	}
	return p
}

// IsTerminal reports whether w is an *os.File that is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}

// Bar is one stage's bar. A nil *Bar, what a disabled progress
// hands out, does nothing and allocates nothing. Add and Reader are safe for
// concurrent use; call Done once the stage ends (defer it: a bar of unknown
// total keeps a goroutine spinning until then).
type Bar struct {
	p     *Progress
	name  string
	unit  string
	total int64 // <= 0: unknown
	start time.Time

	n    atomic.Int64 // everything added so far
	next atomic.Int64 // Add hands the count to the bar once n reaches this

	mu       sync.Mutex // guards the fields below and the calls into bar
	bar      *progressbar.ProgressBar
	max      int64 // the bar's total, which grows if the stage overshoots it
	shown    int64 // the part of n already given to bar
	step     int64
	last     time.Time
	finished bool

	closed bool // guarded by p.mu: ended, its bar may no longer draw
}

// Stage starts a bar for one stage. total <= 0 means unknown (a spinner with a
// count and a rate). unit is "bytes" (shown as bytes and bytes/s; for reading a
// file whose size is the total) or what is counted, such as "rows" or
// "contacts" (shown as a count and unit/s).
func (p *Progress) Stage(name string, total int64, unit string) *Bar {
	if p == nil || p.w == nil {
		return nil
	}
	if unit == "" {
		unit = "rows"
	}
	if total < 0 {
		total = 0
	}
	now := time.Now()
	s := &Bar{p: p, name: name, unit: unit, total: total, start: now, max: total, step: 1, last: now}
	s.next.Store(1)

	desc, width := s.layout()
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(stageWriter{s}),
		progressbar.OptionSetDescription(desc + ":"),
		progressbar.OptionSetWidth(width),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(p.throttle),
		progressbar.OptionUseANSICodes(true),
		progressbar.OptionClearOnFinish(), // Done leaves its own summary line
		progressbar.OptionSetPredictTime(total > 0),
		progressbar.OptionShowTotalBytes(total > 0), // not "1234/-"
		// Draw at once: the stage shows up before its first row, and the bar's
		// clock starts now, before a spinner's goroutine looks at it.
		progressbar.OptionSetRenderBlankState(true),
	}
	if unit == "bytes" {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString(unit))
	}
	barMax := total
	if barMax <= 0 {
		barMax = -1 // progressbar's "unknown"
	}
	s.bar = progressbar.NewOptions64(barMax, opts...)
	return s
}

// layout fits the description and the bar's width to the terminal, when its
// width is known, so that the line does not wrap (a wrapped line cannot be
// redrawn in place).
func (s *Bar) layout() (desc string, width int) {
	desc, width = s.name, 40
	if s.p.fd < 0 {
		return desc, width
	}
	cols, _, err := term.GetSize(s.p.fd)
	if err != nil || cols <= 0 {
		return desc, width
	}
	// What progressbar draws besides the name and the bar, at most:
	//	name: 45% |bar| (1234567/2345678, 1234567 rows/s) [1m2s:3m4s]
	//	name: 45% |bar| (12 MB/48 MB, 23 MB/s) [1m2s:3m4s]
	//	⠋ name: (1234567, 1234567 rows/s) [1m2s]
	//	⠋ name: (12 MB, 23 MB/s) [1m2s]
	var rest, bar int
	switch digits := len(strconv.FormatInt(max(s.total, 9999999), 10)); {
	case s.total > 0 && s.unit == "bytes":
		rest, bar = 48, 10
	case s.total > 0:
		rest, bar = 32+3*digits+len(s.unit), 10
	case s.unit == "bytes":
		rest = 30
	default:
		rest = 24 + 2*digits + len(s.unit)
	}
	room := cols - 1 - rest // for the name and the bar
	if utf8.RuneCountInString(desc) > room-bar {
		desc = shorten(desc, max(room-bar, 12))
	}
	if s.total > 0 {
		width = min(width, max(bar, room-utf8.RuneCountInString(desc)))
	}
	return desc, width
}

// shorten keeps the end of s, where a file's name is, in n runes.
func shorten(s string, n int) string {
	if c := utf8.RuneCountInString(s); c > n {
		r := []rune(s)
		return "…" + string(r[c-n+1:])
	}
	return s
}

// Add counts n more units (n <= 0 is ignored). It costs an atomic add and a
// comparison; the bar itself is touched about every flushEvery.
func (s *Bar) Add(n int64) {
	if s == nil || n <= 0 {
		return
	}
	if s.n.Add(n) >= s.next.Load() {
		s.flush()
	}
}

func (s *Bar) flush() {
	if !s.mu.TryLock() {
		return // another goroutine is at it; a later Add will come back
	}
	defer s.mu.Unlock()
	if s.finished {
		s.next.Store(math.MaxInt64)
		return
	}
	now := time.Now()
	switch dt := now.Sub(s.last); {
	case dt < flushEvery/2 && s.step < maxStep:
		s.step *= 2
	case dt > 2*flushEvery && s.step > 1:
		s.step /= 2
	}
	s.last = now
	s.push()
	s.next.Store(s.shown + s.step)
}

// push gives the bar what was added since the last push. s.mu is held.
func (s *Bar) push() {
	v := s.n.Load()
	d := v - s.shown
	if d <= 0 {
		return
	}
	if s.max > 0 && v > s.max {
		// The total was an estimate: past it, progressbar would stop
		// drawing, so it grows ahead of the count instead.
		s.max = v + v/4
		s.bar.ChangeMax64(s.max)
	}
	s.shown = v
	_ = s.bar.Add64(d)
}

// Done ends the stage: its bar goes and one line with its count, time and
// rate stays. Later calls, and Adds after it, do nothing.
func (s *Bar) Done() {
	if s == nil {
		return
	}
	s.next.Store(math.MaxInt64)
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return
	}
	s.finished = true
	s.push()
	_ = s.bar.Finish() // clears the line if this bar is drawn; stops a spinner
	s.mu.Unlock()

	line := s.summary(s.n.Load(), time.Since(s.start))
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	s.closed = true
	if p.owner == s {
		p.owner = nil // the next stage to draw takes the line
	}
	// Above whatever bar is drawn now; that bar redraws on the next line.
	_, _ = io.WriteString(p.w, eraseLine+line+"\n")
}

// summary is the line a stage leaves once done.
func (s *Bar) summary(n int64, took time.Duration) string {
	secs := max(took.Seconds(), 1e-9)
	rate := float64(n) / secs
	var done string
	if s.unit == "bytes" {
		done = humanBytes(float64(n))
		if s.total > 0 && n < s.total {
			done += " of " + humanBytes(float64(s.total))
		}
		return fmt.Sprintf("%s: %s in %s (%s/s)", s.name, done, roundTook(took), humanBytes(rate))
	}
	done = strconv.FormatInt(n, 10)
	if s.total > 0 && n < s.total {
		done += " of " + strconv.FormatInt(s.total, 10)
	}
	unit := s.unit
	if n == 1 && s.total <= 1 {
		unit = strings.TrimSuffix(unit, "s") // "1 contact"
	}
	return fmt.Sprintf("%s: %s %s in %s (%.0f %s/s)", s.name, done, unit, roundTook(took), rate, s.unit)
}

func roundTook(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// humanBytes is b in SI units, as progressbar shows them: 950 B, 48.2 MB.
func humanBytes(b float64) string {
	const units = "kMGTPE"
	if b < 1000 {
		return fmt.Sprintf("%.0f B", b)
	}
	i := -1
	for b >= 1000 && i < len(units)-1 {
		b /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %cB", b, units[i])
}

// Reader returns r counting the bytes read from it into the stage (r itself
// when the stage is disabled).
func (s *Bar) Reader(r io.Reader) io.Reader {
	if s == nil {
		return r
	}
	return &countingReader{r: r, s: s}
}

// countingReader wraps an io.Reader and adds the bytes read to a stage.
type countingReader struct {
	r io.Reader
	s *Bar
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.s.Add(int64(n))
	return n, err
}

// stageWriter is where a stage's bar draws: through to the terminal while the
// stage owns the line (taking it if it is free), nowhere otherwise. Bars of
// the stages not shown still run, so that their rates are right once shown.
type stageWriter struct{ s *Bar }

func (sw stageWriter) Write(b []byte) (int, error) {
	p := sw.s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if sw.s.closed {
		return len(b), nil
	}
	if p.owner == nil {
		p.owner = sw.s
	}
	if p.owner != sw.s {
		return len(b), nil
	}
	return p.w.Write(b)
}

// LogWriter is where log lines go while bars may be drawn on w: a line
// first clears the bar's line, and the bar draws itself again below it on
// its next update. Without bars it is w itself.
func (p *Progress) LogWriter(w io.Writer) io.Writer {
	if p == nil || p.w == nil {
		return w
	}
	return &progressLog{p: p, w: w}
}

type progressLog struct {
	p *Progress
	w io.Writer
}

func (l *progressLog) Write(b []byte) (int, error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if l.p.owner != nil {
		_, _ = io.WriteString(l.w, eraseLine)
	}
	return l.w.Write(b)
}

// Logger is the process's logger, writing through the display
// (LogWriter(w)): JSON, unless w is a terminal and format is auto, or
// format is console. format and level are --log-format and --log-level.
func (p *Progress) Logger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	out := p.LogWriter(w)
	switch format {
	case "auto":
		if IsTerminal(w) {
			out = zerolog.ConsoleWriter{Out: out}
		}
	case "console":
		out = zerolog.ConsoleWriter{Out: out, NoColor: true}
	case "json":
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want auto, json or console", format)
	}
	// Both exports are read at once, and both log: one write at a time.
	return zerolog.New(zerolog.SyncWriter(out)).Level(lvl).With().Timestamp().Logger(), nil
}
