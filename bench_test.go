package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rs/zerolog"

	"optsync/fixtures/generate"
)

// BenchmarkBackfill measures a first and a repeat backfill of generated
// exports: OPTSYNC_BENCH_CONTACTS contacts (default 100000) × 4 pairs, 5 %
// of values differing. fixtures/bench.sh runs the same at 1M with the real
// binary and measures peak RSS too.
func BenchmarkBackfill(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("OPTSYNC_BENCH_CONTACTS")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	if _, _, err := generate.Write(dir, generate.Options{Contacts: n, Seed: 1, Pairs: 4, DiffPercent: 5}); err != nil {
		b.Fatal(err)
	}
	cfgText := `direction: bidirectional
mappings:
  - {d365: donotemail, campaign: blackListEmail}
  - {d365: donotbulkemail, campaign: blackListMobile}
  - {d365: donotphone, campaign: blackListPhone}
  - {d365: donotsendmm, campaign: blackListPostalMail}
safety: {max_optin: "100%"}
d365: {csv: d365_contacts.csv}
campaign: {csv: campaign_profiles.csv}
`
	if err := os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte(cfgText), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := loadConfig(filepath.Join(dir, "optsync.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	backfill := func() {
		j := &job{cfg: cfg, log: zerolog.Nop(), stdout: io.Discard, command: "backfill"}
		if err := j.run(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name   string
		repeat bool
	}{{"first", false}, {"repeat", true}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				os.RemoveAll(cfg.OutDir)
				if !bc.repeat {
					os.Remove(cfg.State)
				} else if _, err := os.Stat(cfg.State); err != nil {
					backfill()
				}
				b.StartTimer()
				backfill()
			}
			b.ReportMetric(float64(n*4*b.N)/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}
