package state

import (
	"slices"
	"testing"
)

// How a command uses the state file, and the flags its record keeps.
func TestKindAndFlags(t *testing.T) {
	for _, tc := range []struct {
		plan, newState, incremental bool
		want                        RunKind
	}{
		{plan: true, newState: true, want: Plan},
		{newState: true, want: NewState},
		{want: Backfill},
		{incremental: true, want: Incremental},
	} {
		if got := Kind(tc.plan, tc.newState, tc.incremental); got != tc.want {
			t.Errorf("Kind(%v, %v, %v) = %v, want %v", tc.plan, tc.newState, tc.incremental, got, tc.want)
		}
	}
	if got := Flags(true, false, true, true); !slices.Equal(got, []string{"--replay", "--allow-mass-optin", "--new-state"}) {
		t.Errorf("Flags = %q", got)
	}
	if got := Flags(false, false, false, false); got != nil {
		t.Errorf("no flags: %q", got)
	}
}
