package load

import (
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/rs/zerolog"
)

// RunMetrics is what one run reports to cron monitoring.
type RunMetrics struct {
	Command  string
	Started  time.Time
	Ended    time.Time
	ExitCode int
	Sum      *Summary // may be nil when the run failed before counting
}

const metricsPrefix = "optsync_last_run_"

// WriteMetricsFile writes the metrics file, when there is one (path) and
// the command makes metrics (makes: a plan does not). Failing is logged:
// the run is not.
func WriteMetricsFile(path string, makes bool, m RunMetrics, log zerolog.Logger) {
	if path == "" || !makes {
		return
	}
	if err := WriteMetrics(path, m); err != nil {
		log.Error().Err(err).Str("file", path).Msg("writing the metrics file")
	}
}

// WriteMetrics writes the Prometheus textfile-collector format to path,
// atomically and never through a link, as every file optsync writes
// (WriteFile). It is 0644, for node_exporter: the file holds counts
// only, no personal data. (prometheus.WriteToTextfile is not used: it sets
// the mode by name, which a link planted in the folder would redirect.)
func WriteMetrics(path string, m RunMetrics) error {
	ms := metricSet{reg: prometheus.NewRegistry(), cmd: prometheus.Labels{"command": m.Command}}
	regs := ms.runGauges(m)
	if s := m.Sum; s != nil {
		regs = append(regs, ms.summaryGauges(s)...)
	}
	for _, r := range regs {
		if err := r(); err != nil {
			return fmt.Errorf("metrics: register: %w", err)
		}
	}
	mfs, err := ms.reg.Gather()
	if err != nil {
		return fmt.Errorf("metrics: gather: %w", err)
	}
	err = WriteFile(path, FileOptions{Mode: 0o644}, func(w io.Writer) error {
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("metrics: write %s: %w", path, err)
	}
	return nil
}

// metricSet registers the last run's metrics, each labelled with its
// command, in a registry of their own (never the process's default one).
type metricSet struct {
	reg *prometheus.Registry
	cmd prometheus.Labels
}

func (ms metricSet) gauge(name, help string, v float64) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricsPrefix + name, Help: help, ConstLabels: ms.cmd,
	})
	g.Set(v)
	return ms.reg.Register(g)
}

func (ms metricSet) vec(name, help, label string, vals map[string]int) error {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricsPrefix + name, Help: help, ConstLabels: ms.cmd,
	}, []string{label})
	for k, n := range vals {
		g.WithLabelValues(k).Set(float64(n))
	}
	return ms.reg.Register(g)
}

// runGauges are the metrics every run has, counted or not: when it ran and
// how it ended. Registered in order by WriteMetrics, which stops at the
// first that fails.
func (ms metricSet) runGauges(m RunMetrics) []func() error {
	success := 0.0
	if m.ExitCode == 0 {
		success = 1
	}
	return []func() error{
		func() error {
			return ms.gauge("start_timestamp_seconds", "Unix time the last optsync run started.", unixSeconds(m.Started))
		},
		func() error {
			return ms.gauge("end_timestamp_seconds", "Unix time the last optsync run ended.", unixSeconds(m.Ended))
		},
		func() error {
			return ms.gauge("duration_seconds", "Wall-clock duration of the last optsync run in seconds.", m.Ended.Sub(m.Started).Seconds())
		},
		func() error {
			return ms.gauge("exit_code", "Process exit code of the last optsync run (0 = success).", float64(m.ExitCode))
		},
		func() error {
			return ms.gauge("success", "1 if the last optsync run exited with code 0, else 0.", success)
		},
	}
}

// summaryGauges are the run's counts, there only when it got far enough to
// count.
func (ms metricSet) summaryGauges(s *Summary) []func() error {
	return []func() error{
		func() error {
			return ms.vec("writes", "Opt-out flag writes decided in the last run, by direction.", "direction",
				map[string]int{"d365->campaign": s.ToCampaign, "campaign->d365": s.ToD365})
		},
		func() error {
			return ms.vec("rule_writes", "Opt-out flag writes decided in the last run, by sync rule.", "rule", s.Rules)
		},
		func() error {
			return ms.gauge("skipped", "Decisions skipped in the last run.", float64(s.Skipped))
		},
		func() error {
			return ms.gauge("rejected", "Input rows and records not processed in the last run (the rejects file).", float64(s.Rejected))
		},
		func() error {
			return ms.gauge("failed_writes", "Writes that failed in the last run.", float64(s.Failed))
		},
		func() error {
			return ms.gauge("compared_pairs", "Flag pairs compared in the last run (matched contacts x flag pairs).", float64(s.ComparedPairs))
		},
		func() error {
			return ms.gauge("opt_outs_cleared", "Writes in the last run that clear an opt-out.", float64(s.OptoutsCleared))
		},
		func() error {
			return ms.gauge("pending_writes_not_seen", "Writes to update files, left by earlier runs, that no export has shown yet.", float64(s.PendingNotSeen))
		},
		func() error {
			return ms.gauge("pending_writes_oldest_age_seconds", "Age of the oldest write to an update file that no export has shown yet (0: none).", s.PendingOldest.Seconds())
		},
		func() error {
			return ms.gauge("would_clear", "Opt-outs the last run would have cleared when a safety limit stopped it (it wrote nothing).", float64(s.WouldClear))
		},
		func() error {
			return ms.gauge("known_opt_outs", "Opt-outs known before the last run: the base of a percentage safety.max_optin.", float64(s.KnownOptOuts))
		},
	}
}

// unixSeconds is t as fractional Unix seconds, 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
