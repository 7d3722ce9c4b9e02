// Package report renders the HTML report of a run, a plan or a period: one
// self-contained page (styles and charts inside, no script, nothing fetched)
// that opens from a mail attachment and prints on A4.
//
// It takes plain values: the caller reads them from the run history and
// hands them over, so this package knows nothing of how runs are stored.
package report

import "time"

// Kind says what a page reports on.
type Kind int

const (
	// OneRun is the report of one recorded run.
	OneRun Kind = iota
	// Preview is a plan's: what a run would do; nothing was written.
	Preview
	// Period aggregates the runs started in a time span and lists them.
	Period
)

// Report is everything one page shows.
type Report struct {
	Kind      Kind
	Generated time.Time
	Version   string // the optsync that wrote the page
	// Run is the run reported on (OneRun, Preview); for a Period the
	// latest run of it.
	Run Run
	// Since and Until bound a Period; Runs lists its runs, newest first.
	Since, Until time.Time
	Runs         []Run
	// Counts are the run's counts, summed over a Period, by name as the
	// run history holds them: "d365->campaign", "rule:<rule>",
	// "skipped:<reason>", "opt_outs_cleared", …
	Counts       map[string]int
	Rejects      []Reasons
	FailedWrites []Reasons
	// Trend is one point per run, oldest first (for a run: the last runs
	// up to it; for a Period: its runs).
	Trend         []Point
	Config        *Config // nil when not recorded (runs made before it was)
	ConfigChanges []ConfigChange
}

// Run is one run's record.
type Run struct {
	ID       string
	Command  string
	Outcome  string // ok, failed-writes, safety-stop, interrupted, error, running, planned
	ExitCode int
	Started  time.Time
	Ended    time.Time // zero while running
	Error    string
	Version  string
	Counts   map[string]int
}

// Duration is how long the run took (0 when it has not ended).
func (r Run) Duration() time.Duration {
	if r.Ended.IsZero() {
		return 0
	}
	return r.Ended.Sub(r.Started)
}

// Point is one run of the trend.
type Point struct {
	RunID   string
	Started time.Time
	Outcome string
	Counts  map[string]int
}

// Reasons is one reason of rejected rows or failed writes: how many, and
// the first examples.
type Reasons struct {
	Reason   string
	Count    int
	Examples []Example
}

// Example locates one rejected row (Source file, Line, ID) or one failed
// write (Source: the system written to; ID, PKey, Field, and the
// service's Message).
type Example struct {
	Source  string
	Line    int
	ID      string
	PKey    string
	Field   string
	Message string
}

// Config is the config a run was made with.
type Config struct {
	Direction, Policy string
	Mappings          []Mapping
	MaxOptin          string
	Limit             int
	D365, Campaign    string // source → target
	Options           []string
}

// Mapping is one pair of mapped fields.
type Mapping struct {
	D365, Campaign string
	Invert         bool
}

// ConfigChange is a change of the config recorded with a run.
type ConfigChange struct {
	RunID   string
	Started time.Time
	Change  string
}
