package state

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Options is what the config says of what is kept between runs: the state
// file (state), how long the decision log keeps a run's decisions
// (audit_retention), how long a write to an update file may wait to be
// seen in the exports before every run warns of it (pending_alert), and
// how long a run may hold it (max_run_time). The
// config file fills the fields as written; Check reads the durations.
type Options struct {
	Path                         string
	AuditRetention, PendingAlert string
	// MaxRunTime is max_run_time as written ("" is 6h): how long a run may
	// hold the state before it stops as on SIGTERM, so that a service
	// throttling it for hours does not keep the next night from running.
	MaxRunTime string

	retention, pendingAlert, maxRunTime time.Duration
}

// DefaultRetention is audit_retention when the config does not set it.
const (
	DefaultRetention    = 400 * 24 * time.Hour
	defaultPendingAlert = 3 * 24 * time.Hour
	defaultMaxRunTime   = 6 * time.Hour
)

// Check reads the durations; its errors name the config key.
func (o *Options) Check() error {
	var err error
	if o.retention, err = ParseDays(o.AuditRetention, DefaultRetention); err != nil {
		return fmt.Errorf("audit_retention: %w", err)
	}
	if o.pendingAlert, err = ParseDays(o.PendingAlert, defaultPendingAlert); err != nil {
		return fmt.Errorf("pending_alert: %w", err)
	}
	o.maxRunTime = defaultMaxRunTime
	if o.MaxRunTime != "" {
		d, err := time.ParseDuration(strings.TrimSpace(o.MaxRunTime))
		if err != nil || d <= 0 {
			return fmt.Errorf("max_run_time: %q is not a duration (6h, 90m)", o.MaxRunTime)
		}
		o.maxRunTime = d
	}
	return nil
}

// RunTime is how long a run may take (max_run_time, default 6h).
func (o *Options) RunTime() time.Duration { return o.maxRunTime }

// Retention is how long the decision log keeps a run's decisions (default
// 400 days).
func (o *Options) Retention() time.Duration { return o.retention }

// PendingAlertAfter is how long a write may wait to be seen in the exports
// before every run warns of it (default 3 days).
func (o *Options) PendingAlertAfter() time.Duration { return o.pendingAlert }

// ParseDays reads days ("400", "400d") or a Go duration ("72h"); blank is
// def.
func ParseDays(s string, def time.Duration) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return def, nil
	}
	if days, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && days > 0 {
		return time.Duration(days) * 24 * time.Hour, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("%q is neither a number of days (400d) nor a duration (72h)", s)
}
