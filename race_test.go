package main

import (
	"fmt"
	"strings"
	"testing"
)

// A person unsubscribing in Campaign while optsync clears their opt-out:
// under the simulator's concurrent-edit switch (unsubscribes landing just
// before a clearing PATCH, just after it, and at the re-read before it),
// every one of them is still in place after the run, and the next run
// carries each to Dynamics.
func TestCampaignUnsubscribeRaceUnderConcurrentEdits(t *testing.T) {
	const n = 480
	p := newCampaignProject(t, n, true, "  source: api\n  target: api\n  concurrency: 8\n  changed_filter: {name: Changed, param: since}\n")
	p.csim.SetConcurrentUnsubscribes(0.5)
	r := p.cli(t, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("exit %d, want 3 (raced writes are queued)\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	p.csim.SetConcurrentUnsubscribes(0)
	unsubs := p.csim.Unsubscriptions()
	moments := map[string]int{}
	for _, u := range unsubs {
		moments[u.Moment]++
	}
	for _, m := range []string{"read", "before-patch", "after-patch"} {
		if moments[m] < 3 {
			t.Fatalf("the switch made too few %s unsubscribes to prove anything: %v", m, moments)
		}
	}
	index := map[string]int{}
	for i := 1; i <= n; i++ {
		index[fmt.Sprintf("@p%d", i)] = i
	}
	raced := map[string]bool{}
	for _, a := range p.out(t, "audit", r.runID) {
		if a["outcome"] == "unsubscribe-race-restored" {
			raced[a["profile_pkey"]] = true
			if !strings.Contains(a["error"], "unsubscribe") && !strings.Contains(a["error"], "changed in Campaign") {
				t.Errorf("%s: the audit row does not say why: %q", a["profile_pkey"], a["error"])
			}
		}
	}
	for _, u := range unsubs {
		if v := p.blackListEmail(t, index[u.PKey]); v == nil || !*v {
			t.Errorf("%s: the %s unsubscribe at %s was overwritten", u.PKey, u.Moment, u.Time.Format("15:04:05.000"))
		}
		if u.Moment != "read" && !raced[u.PKey] {
			t.Errorf("%s: a %s unsubscribe is not audited as unsubscribe-race-restored", u.PKey, u.Moment)
		}
	}
	// Writes nobody raced went through: the guard does not undo everything.
	cleared := 0
	for i := 1; i <= n; i++ {
		if i%4 == 0 && i%3 != 0 {
			if v := p.blackListEmail(t, i); v != nil && !*v {
				cleared++
			}
		}
	}
	if cleared == 0 {
		t.Fatal("no opt-out was cleared at all")
	}

	// The next run reads the queued profiles again: each unsubscribe is the
	// newer change and goes to Dynamics.
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("next run: exit %d\n%s", r.code, r.stderr)
	}
	for _, u := range unsubs {
		i := index[u.PKey]
		if c := p.blackListEmail(t, i); c == nil || !*c {
			t.Errorf("%s: the opt-out is gone from Campaign after the next run", u.PKey)
		}
		if d := p.donotemail(t, i); d == nil || !*d {
			t.Errorf("contact %d: the %s unsubscribe did not reach Dynamics: donotemail %s", i, u.Moment, deref(d))
		}
	}
	t.Logf("%d clearing writes applied, %d unsubscribes raced them: %v", cleared, len(unsubs), moments)
}
