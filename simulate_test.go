package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's way to try optsync against both APIs: the simulate command
// started in the background with -config-out writes the config before it
// prints its ready line, so optsync started once that line is seen has the
// whole file and two simulators that answer. The demo's backfill (its
// opt-ins accepted) writes to both APIs; the run after it writes nothing.
func TestSimulateCommandThenOptsync(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "simulate")
	if out, err := exec.Command("go", "build", "-o", bin, "./fixtures/cmd/simulate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const secret = "sim-Secret_do-not-log"
	cfg := filepath.Join(dir, "sim.yaml")
	sim := exec.Command(bin, "-config-out", cfg, "-state-dir", dir,
		"-contacts", "fixtures/demo/d365_contacts.csv", "-profiles", "fixtures/demo/campaign_profiles.csv")
	sim.Env = append(os.Environ(), "OPTSYNC_SIM_SECRET="+secret)
	out, err := sim.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready:") {
				ready <- sc.Text()
			}
		}
		ended <- sim.Wait()
	}()
	t.Cleanup(func() {
		_ = sim.Process.Signal(syscall.SIGTERM)
		if err := <-ended; err != nil {
			t.Errorf("simulate after SIGTERM: %v", err)
		}
	})
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	select {
	case <-ready:
	case err := <-ended:
		ended <- err
		t.Fatalf("simulate ended without a ready line: %v", err)
	case <-timeout.C:
		t.Fatal("no ready line within two minutes")
	}

	t.Setenv("OPTSYNC_SIM_SECRET", secret)
	optsync := func(args ...string) (int, string) {
		r := runAsGiven(t, hooks{}, append([]string{"--config", cfg}, args...)...)
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Fatal("the secret reached the output")
		}
		return r.code, r.stdout + r.stderr
	}
	code, text := optsync("backfill", "--allow-mass-optin")
	if code != 0 || !strings.Contains(text, "compared=2915 pairs") || strings.Contains(text, "d365->campaign=0 ") || strings.Contains(text, "campaign->d365=0 ") {
		t.Fatalf("backfill against the simulators: exit %d\n%s", code, text)
	}
	code, text = optsync("run")
	if code != 0 || !strings.Contains(text, "d365->campaign=0 campaign->d365=0") {
		t.Fatalf("the run after: exit %d\n%s", code, text)
	}
}
