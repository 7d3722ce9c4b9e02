package transform

import "testing"

func TestOptinLimit(t *testing.T) {
	cases := []struct {
		spec  string
		known int
		want  int
	}{
		// a count stays a count
		{"", 10, 1000}, {"100", 10, 100}, {"0", 10, 0}, {"100", 100000, 100},
		// a percentage of the known opt-outs, rounded up, never below min_optin (10)
		{"5%", 20000, 1000}, {"29%", 100, 29}, {"5%", 401, 21}, {"5%", 400, 20},
		{"5%", 8, 10}, {"100%", 1, 10}, {"2%", 49, 10}, {"5%", 0, 10},
	}
	for _, tc := range cases {
		l, err := ParseOptinLimit(tc.spec)
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		if got := l.Allowed(tc.known); got != tc.want {
			t.Errorf("%q of %d = %d, want %d", tc.spec, tc.known, got, tc.want)
		}
	}
	l, _ := ParseOptinLimit("5%")
	l.Min = 0
	if got := l.Allowed(8); got != 1 {
		t.Errorf("5%% of 8 with min_optin 0 = %d, want 1", got)
	}
}

// A stop message says where the limit came from: the count, the share of
// the known opt-outs, or min_optin when the share was below it.
func TestOptinLimitExplain(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		known int
		want  string
	}{
		{"100", 5000, "safety.max_optin 100"},
		{"5%", 1000, "safety.max_optin 5% of 1000 known opt-outs"},
		{"5%", 1, "safety.max_optin 5% of 1 known opt-out, raised to safety.min_optin 10"},
	} {
		l, err := ParseOptinLimit(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Explain(tc.known, l.Allowed(tc.known)); got != tc.want {
			t.Errorf("%q of %d: %q, want %q", tc.spec, tc.known, got, tc.want)
		}
	}
}

func TestMissingLimit(t *testing.T) {
	cases := []struct {
		spec  string
		known int
		want  int
	}{
		{"", 2930, 293}, {"10%", 100, 10}, {"10%", 9, 0}, {"25", 1000, 25}, {"0", 5, 0}, {"100%", 7, 7},
	}
	for _, tc := range cases {
		l, err := ParseMissingLimit(tc.spec)
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		if got := l.Allowed(tc.known); got != tc.want {
			t.Errorf("%q of %d = %d, want %d", tc.spec, tc.known, got, tc.want)
		}
	}
}
