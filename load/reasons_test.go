package load

import (
	"fmt"
	"strings"
	"testing"
)

func TestReasonShape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`donotemail "maybe" is not a boolean`, `donotemail "…" is not a boolean`},
		{`contactid "john@example.com" is not a GUID`, `contactid "…" is not a GUID`},
		{`superseded: line 12 is a later row for this contact`, `superseded: line N is a later row for this contact`},
		{`row has 5 fields, the header has 4`, `row has N fields, the header has N`},
		{`duplicate-externalId: contact 0a1b2c3d-0000-4000-8000-00000000000a is linked to profile @abc_DEF-1 in state`,
			`duplicate-externalId: contact … is linked to profile … in state`},
		{`xx_smsconsent2 "x \"quoted\" y" is not a boolean; modifiedon "" is not a timestamp`,
			`xx_smsconsent2 "…" is not a boolean; modifiedon "…" is not a timestamp`},
		{`HTTP 412: precondition failed`, `HTTP N: precondition failed`},
	} {
		if got := ReasonShape(tc.in); got != tc.want {
			t.Errorf("ReasonShape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAddReasonBounds(t *testing.T) {
	var g []Reasons
	// Many rows of one reason: all counted, MaxExamples kept.
	for i := range 50 {
		g = AddReason(g, fmt.Sprintf(`donotemail "v%d" is not a boolean`, i), Example{Source: "a.csv", Line: i + 2})
	}
	if len(g) != 1 || g[0].Count != 50 || len(g[0].Examples) != MaxExamples || g[0].Examples[0].Line != 2 {
		t.Fatalf("one reason: %+v", g)
	}
	// More distinct reasons than MaxReasons: the rest share one entry.
	for i := range MaxReasons + 5 {
		g = AddReason(g, fmt.Sprintf("field%c is wrong", 'a'+i), Example{Line: i})
	}
	if len(g) != MaxReasons+1 || g[MaxReasons].Reason != OtherReasons || g[MaxReasons].Count != 6 {
		t.Fatalf("%d reasons, last %+v", len(g), g[len(g)-1])
	}
	// A long service message is clipped.
	g = AddReason(nil, "refused", Example{Message: strings.Repeat("é", 400)})
	if m := g[0].Examples[0].Message; len(m) > 310 || !strings.HasSuffix(m, "…") {
		t.Fatalf("message of %d bytes kept", len(m))
	}
}

func TestMergeReasonsShowsEachRowOnce(t *testing.T) {
	night := AddReason(AddReason(nil, "bad", Example{Source: "a.csv", Line: 3}), "bad", Example{Source: "a.csv", Line: 7})
	var period []Reasons
	period = MergeReasons(period, night)
	period = MergeReasons(period, night)
	if len(period) != 1 || period[0].Count != 4 || len(period[0].Examples) != 2 {
		t.Fatalf("merged: %+v", period)
	}
}
