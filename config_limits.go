package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"optsync/extract"
)

// InputConfig tells a broken export from one to read: a quoted field that
// runs past max_field_bytes or max_field_lines (or to the end of the file)
// is a stray quote, and a file with more than max_reject_share of its rows
// rejected is not an export. Either stops the run, exit 2.
type InputConfig struct {
	MaxFieldBytes  int    `yaml:"max_field_bytes"`
	MaxFieldLines  int    `yaml:"max_field_lines"`
	MaxRejectShare string `yaml:"max_reject_share"`
}

// defaultMaxRunTime is max_run_time when the config does not set it.
const defaultMaxRunTime = 6 * time.Hour

// validateLimits checks input: and max_run_time.
func (c *Config) validateLimits() error {
	in := c.Input
	if in.MaxFieldBytes < 0 || in.MaxFieldBytes > 1<<30 {
		return fmt.Errorf("input.max_field_bytes: %d is outside 1..1073741824 (default 65536)", in.MaxFieldBytes)
	}
	if in.MaxFieldLines < 0 || in.MaxFieldLines > 1<<20 {
		return fmt.Errorf("input.max_field_lines: %d is outside 1..1048576 (default 100)", in.MaxFieldLines)
	}
	c.limits = extract.Limits{MaxFieldBytes: in.MaxFieldBytes, MaxFieldLines: in.MaxFieldLines}
	if s := strings.TrimSpace(in.MaxRejectShare); s != "" {
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || !strings.HasSuffix(s, "%") || v <= 0 || v > 100 {
			return fmt.Errorf("input.max_reject_share: %q is not a share of rows (50%%)", in.MaxRejectShare)
		}
		c.limits.MaxRejectShare = v / 100
	}
	c.maxRunTime = defaultMaxRunTime
	if c.MaxRunTime != "" {
		d, err := time.ParseDuration(strings.TrimSpace(c.MaxRunTime))
		if err != nil || d <= 0 {
			return fmt.Errorf("max_run_time: %q is not a duration (6h, 90m)", c.MaxRunTime)
		}
		c.maxRunTime = d
	}
	c.memoryBudget = defaultMemoryBudget
	if c.MemoryBudget != "" {
		n, err := parseSize(c.MemoryBudget)
		if err != nil || n < minMemoryBudget {
			return fmt.Errorf("memory_budget: %q is not a size of at least 64MB (1GB, 300MB)", c.MemoryBudget)
		}
		c.memoryBudget = n
	}
	return nil
}

// defaultMemoryBudget is memory_budget when the config does not set it:
// the peak a run may reach (RSS). minMemoryBudget is the least that makes
// sense: the process itself, its buffers and the state file's pages as a
// commit writes them take some tens of MB whatever the budget.
const (
	defaultMemoryBudget = 1 << 30
	minMemoryBudget     = 64 << 20
)

// parseSize reads a size: a number of bytes, or with KB, MB, GB (powers of
// 1024; KiB, MiB, GiB too).
func parseSize(s string) (int64, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.n
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("not a size")
	}
	return int64(v * float64(mult)), nil
}
