package load

import (
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sample is one parsed series: its labels and gauge value.
type sample struct {
	labels map[string]string
	value  float64
}

// parsedMetrics reads a textfile-collector file back with the Prometheus parser.
type parsedMetrics struct {
	help    map[string]string
	samples map[string][]sample
}

func parseMetricsFile(t *testing.T, path string) parsedMetrics {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	out := parsedMetrics{help: map[string]string{}, samples: map[string][]sample{}}
	for name, mf := range mfs {
		if got := mf.GetType().String(); got != "GAUGE" {
			t.Errorf("%s: type %s, want GAUGE", name, got)
		}
		out.help[name] = mf.GetHelp()
		for _, m := range mf.GetMetric() {
			s := sample{labels: map[string]string{}, value: m.GetGauge().GetValue()}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			out.samples[name] = append(out.samples[name], s)
		}
	}
	return out
}

func (p parsedMetrics) names() []string {
	var ns []string
	for n := range p.samples {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// single is the value of a metric that must have exactly one series,
// labelled only with command=wantCmd.
func (p parsedMetrics) single(t *testing.T, name, wantCmd string) float64 {
	t.Helper()
	ss := p.samples[name]
	if len(ss) != 1 {
		t.Fatalf("%s: %d series, want 1", name, len(ss))
	}
	if len(ss[0].labels) != 1 || ss[0].labels["command"] != wantCmd {
		t.Errorf("%s: labels %v, want only command=%q", name, ss[0].labels, wantCmd)
	}
	return ss[0].value
}

// byLabel maps label value -> gauge value for a metric whose series carry
// command=wantCmd plus exactly one other label.
func (p parsedMetrics) byLabel(t *testing.T, name, label, wantCmd string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range p.samples[name] {
		if len(s.labels) != 2 || s.labels["command"] != wantCmd {
			t.Errorf("%s: labels %v, want command=%q and %s", name, s.labels, wantCmd, label)
		}
		v, ok := s.labels[label]
		if !ok {
			t.Errorf("%s: series %v has no %s label", name, s.labels, label)
			continue
		}
		if _, dup := out[v]; dup {
			t.Errorf("%s: duplicate series %s=%q", name, label, v)
		}
		out[v] = s.value
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, e := range es {
		ns = append(ns, e.Name())
	}
	return ns
}

var timeMetrics = []string{
	"optsync_last_run_duration_seconds",
	"optsync_last_run_end_timestamp_seconds",
	"optsync_last_run_exit_code",
	"optsync_last_run_start_timestamp_seconds",
	"optsync_last_run_success",
}

func TestWriteMetricsFullRun(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "optsync.prom")
	started := time.Date(2026, 11, 29, 2, 0, 0, 500_000_000, time.UTC)
	ended := started.Add(83*time.Second + 250*time.Millisecond)

	// Every count distinct, so a swapped field shows up as a wrong value.
	s := NewSummary("run-1", "sync")
	s.ToCampaign, s.ToD365 = 7, 3
	s.Rules = map[string]int{"newest_wins": 6, "optout_wins": 4}
	s.Skipped, s.Rejected, s.Failed = 2, 1, 5
	s.ComparedPairs, s.OptoutsCleared = 120, 9
	s.Matched = 60 // not exported as a metric

	err := WriteMetrics(path, RunMetrics{Command: "sync", Started: started, Ended: ended, ExitCode: 0, Sum: s})
	if err != nil {
		t.Fatal(err)
	}
	p := parseMetricsFile(t, path)

	want := append(slices.Clone(timeMetrics),
		"optsync_last_run_compared_pairs",
		"optsync_last_run_failed_writes",
		"optsync_last_run_known_opt_outs",
		"optsync_last_run_opt_outs_cleared",
		"optsync_last_run_pending_writes_not_seen",
		"optsync_last_run_pending_writes_oldest_age_seconds",
		"optsync_last_run_rejected",
		"optsync_last_run_rule_writes",
		"optsync_last_run_skipped",
		"optsync_last_run_would_clear",
		"optsync_last_run_writes",
	)
	slices.Sort(want)
	if got := p.names(); !slices.Equal(got, want) {
		t.Fatalf("metric names:\n got %v\nwant %v", got, want)
	}
	for _, n := range want {
		if strings.TrimSpace(p.help[n]) == "" {
			t.Errorf("%s has no HELP text", n)
		}
	}

	if v := p.single(t, "optsync_last_run_start_timestamp_seconds", "sync"); !near(v, 1795917600.5) {
		t.Errorf("start = %v, want 1795917600.5", v)
	}
	if v := p.single(t, "optsync_last_run_end_timestamp_seconds", "sync"); !near(v, 1795917683.75) {
		t.Errorf("end = %v, want 1795917683.75", v)
	}
	if v := p.single(t, "optsync_last_run_duration_seconds", "sync"); !near(v, 83.25) {
		t.Errorf("duration = %v, want 83.25", v)
	}
	if v := p.single(t, "optsync_last_run_exit_code", "sync"); v != 0 {
		t.Errorf("exit_code = %v, want 0", v)
	}
	if v := p.single(t, "optsync_last_run_success", "sync"); v != 1 {
		t.Errorf("success = %v, want 1", v)
	}

	dirs := p.byLabel(t, "optsync_last_run_writes", "direction", "sync")
	if want := map[string]float64{"d365->campaign": 7, "campaign->d365": 3}; !maps.Equal(dirs, want) {
		t.Errorf("writes by direction = %v, want %v", dirs, want)
	}
	rules := p.byLabel(t, "optsync_last_run_rule_writes", "rule", "sync")
	if want := map[string]float64{"newest_wins": 6, "optout_wins": 4}; !maps.Equal(rules, want) {
		t.Errorf("writes by rule = %v, want %v", rules, want)
	}

	for name, want := range map[string]float64{
		"optsync_last_run_skipped":          2,
		"optsync_last_run_rejected":         1,
		"optsync_last_run_failed_writes":    5,
		"optsync_last_run_compared_pairs":   120,
		"optsync_last_run_opt_outs_cleared": 9,
	} {
		if v := p.single(t, name, "sync"); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}

	if got := dirEntries(t, dir); !slices.Equal(got, []string{"optsync.prom"}) {
		t.Errorf("folder holds %v, want only optsync.prom (temp file left behind?)", got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
}

func TestWriteMetricsFailedRunReplacesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "optsync.prom")

	// A previous successful run's file, still held open by a reader (as
	// node_exporter might): an atomic rename leaves the reader's view intact,
	// an in-place rewrite would truncate it.
	s := NewSummary("run-0", "sync")
	s.ToCampaign, s.Rules = 11, map[string]int{"newest_wins": 11}
	old := RunMetrics{Command: "sync", Started: time.Unix(1000, 0), Ended: time.Unix(1010, 0), Sum: s}
	if err := WriteMetrics(path, old); err != nil {
		t.Fatal(err)
	}
	oldBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	started := time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)
	ended := started.Add(1500 * time.Millisecond)
	err = WriteMetrics(path, RunMetrics{Command: "backfill", Started: started, Ended: ended, ExitCode: 4, Sum: nil})
	if err != nil {
		t.Fatal(err)
	}

	p := parseMetricsFile(t, path)
	if got := p.names(); !slices.Equal(got, timeMetrics) {
		t.Fatalf("metric names with nil summary:\n got %v\nwant %v", got, timeMetrics)
	}
	for _, n := range timeMetrics {
		if strings.TrimSpace(p.help[n]) == "" {
			t.Errorf("%s has no HELP text", n)
		}
	}
	if v := p.single(t, "optsync_last_run_exit_code", "backfill"); v != 4 {
		t.Errorf("exit_code = %v, want 4", v)
	}
	if v := p.single(t, "optsync_last_run_success", "backfill"); v != 0 {
		t.Errorf("success = %v, want 0", v)
	}
	if v := p.single(t, "optsync_last_run_start_timestamp_seconds", "backfill"); !near(v, float64(started.Unix())) {
		t.Errorf("start = %v, want %v", v, started.Unix())
	}
	if v := p.single(t, "optsync_last_run_end_timestamp_seconds", "backfill"); !near(v, float64(started.Unix())+1.5) {
		t.Errorf("end = %v, want %v", v, float64(started.Unix())+1.5)
	}
	if v := p.single(t, "optsync_last_run_duration_seconds", "backfill"); !near(v, 1.5) {
		t.Errorf("duration = %v, want 1.5", v)
	}

	held := make([]byte, len(oldBytes)+1)
	n, _ := reader.ReadAt(held, 0)
	if string(held[:n]) != string(oldBytes) {
		t.Errorf("old file was rewritten in place, not replaced by rename: open reader now sees %q", held[:n])
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"optsync.prom"}) {
		t.Errorf("folder holds %v, want only optsync.prom (temp file left behind?)", got)
	}
}

func TestWriteMetricsMissingFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "optsync.prom")
	if err := WriteMetrics(path, RunMetrics{Command: "sync"}); err == nil {
		t.Fatal("writeMetrics into a missing folder: got nil error")
	}
}
