package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot/vg"
)

//go:embed report.html.tmpl
var pageTemplate string

// row is one line of a table of counts.
type row struct {
	Name  string // the count's name in the run history
	Label string
	Note  string
	Value int
	Color string
}

// view is the page as the template reads it: the report plus what is
// worked out from it.
type view struct {
	*Report
	Title, Heading string
	Status         string // the outcome as a word
	StatusClass    string // ok, warn, bad, preview
	Explain        string
	Took           time.Duration
	Tiles          []row
	Directions     []row
	Rules          []row
	Skipped        []row
	NotCompared    []row
	AllCounts      []row
	StatusCounts   []row // a period: runs per outcome
	Series         []series
	DirectionChart template.HTML
	RuleChart      template.HTML
	TrendChart     template.HTML
}

var countLabels = map[string]string{
	"compared_pairs":                "pairs compared",
	"matched_contacts":              "contacts with one profile",
	"contact_rows":                  "Dynamics rows read",
	"profile_rows":                  "Campaign rows read",
	"d365->campaign":                "writes Dynamics → Campaign",
	"campaign->d365":                "writes Campaign → Dynamics",
	"opt_outs_cleared":              "opt-outs cleared",
	"skipped":                       "pairs skipped",
	"rejected":                      "rows rejected",
	"failed":                        "writes failed",
	"contacts_without_profile":      "contacts without a profile",
	"profiles_without_contact":      "profiles without a contact",
	"profiles_without_externalId":   "profiles without an externalId",
	"duplicate_externalId_profiles": "profiles sharing an externalId",
	"superseded_contact_rows":       "rows superseded by a later row",
	"blocked_contacts":              "contacts blocked by a bad row",
	"d365_update_rows":              "rows in the Dynamics update file",
	"campaign_update_rows":          "rows in the Campaign update file",
	"decided_against_state":         "decided against the other side as state knows it",
	"waiting_for_counterpart":       "waiting for the other side",
	"stale_rows":                    "rows older than what state knew",
	"unchanged_contacts":            "contacts read again, unchanged: not decided",
	"deleted_in_d365":               "contacts deleted in Dynamics",
	"snapshots_forgotten":           "snapshots forgotten",
	"pending_not_seen":              "writes to update files no export shows yet",
	"pending_oldest_age_seconds":    "age of the oldest of them (seconds)",
	"pending_written_again":         "of them written again (the record moved without them)",
}

var ruleNotes = map[string]string{
	"only-d365-changed":       "only Dynamics changed since the last agreement",
	"only-campaign-changed":   "only Campaign changed since the last agreement",
	"conflict-d365-newer":     "no agreement yet; the Dynamics record is newer",
	"conflict-campaign-newer": "no agreement yet; the Campaign profile is newer",
	"conflict-tie-optout":     "no agreement yet; same second: opted-out wins",
	"adobe-campaign-newer":    "policy adobe: Campaign is newer",
	"adobe-optout-wins":       "policy adobe: opted-out wins",
	"policy-optout-wins":      "policy optout-wins",
	"policy-d365-wins":        "policy d365-wins",
	"policy-campaign-wins":    "policy campaign-wins",
	"source-of-truth":         "one-way sync from the source system",
}

// skipNotes explain a skip by its reason code: "unknown-value" of
// "unknown-value: campaign blank".
var skipNotes = map[string]string{
	"unknown-value": "one side is blank or null: an unknown value is never propagated",
}

// notCompared are the counts of records that were read but not decided.
var notCompared = []string{"contacts_without_profile", "profiles_without_contact", "profiles_without_externalId",
	"duplicate_externalId_profiles", "superseded_contact_rows", "blocked_contacts", "waiting_for_counterpart", "stale_rows", "unchanged_contacts"}

var statusWords = map[string][2]string{
	"ok":            {"OK", "ok"},
	"failed-writes": {"Failed writes", "bad"},
	"safety-stop":   {"Safety stop", "bad"},
	"interrupted":   {"Interrupted", "warn"},
	"error":         {"Error", "bad"},
	"running":       {"Running", "warn"},
	"planned":       {"Preview", "preview"},
}

func label(name string) string {
	if l, ok := countLabels[name]; ok {
		return l
	}
	return name
}

func statusWord(outcome string) (string, string) {
	if w, ok := statusWords[outcome]; ok {
		return w[0], w[1]
	}
	return outcome, "warn"
}

// Render writes the page.
func Render(w io.Writer, r *Report) error {
	v, err := newView(r)
	if err != nil {
		return err
	}
	t, err := template.New("report").Funcs(template.FuncMap{
		"num":      num,
		"dur":      dur,
		"when":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"base":     filepath.Base,
		"status":   func(o string) string { s, _ := statusWord(o); return s },
		"statusCl": func(o string) string { _, c := statusWord(o); return c },
		"count":    func(r Run, name string) int { return r.Counts[name] },
	}).Parse(pageTemplate)
	if err != nil {
		return fmt.Errorf("report template: %w", err)
	}
	if err := t.Execute(w, v); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// newView turns a report into what the page template shows: its heading and
// status, the count tables, and the charts drawn from them.
func newView(r *Report) (*view, error) {
	v := &view{Report: r, Series: trendSeries, Took: r.Run.Duration()}
	switch r.Kind {
	case Period:
		v.periodStatus(r)
	default:
		v.Heading = r.Run.Command + " " + r.Run.ID
		v.Title = "optsync report: " + v.Heading
		v.Status, v.StatusClass = statusWord(r.Run.Outcome)
		v.Explain = explain(r)
	}
	v.countRows(r.Counts)
	if err := v.charts(r); err != nil {
		return nil, err
	}
	return v, nil
}

// periodStatus heads a period's report: its status is its worst run's, and
// its runs are counted by outcome (the known outcomes first, worst last,
// then any other by name).
func (v *view) periodStatus(r *Report) {
	v.Heading = fmt.Sprintf("Runs from %s to %s", r.Since.UTC().Format("2006-01-02 15:04"), r.Until.UTC().Format("2006-01-02 15:04 UTC"))
	v.Title = "optsync report: runs since " + r.Since.UTC().Format("2006-01-02")
	worst := "ok"
	byStatus := map[string]int{}
	for _, run := range r.Runs {
		byStatus[run.Outcome]++
		v.Took += run.Duration()
		if _, cl := statusWord(run.Outcome); cl == "bad" || (cl == "warn" && worst == "ok") {
			worst = run.Outcome
		}
	}
	for _, o := range []string{"ok", "failed-writes", "safety-stop", "interrupted", "error", "running"} {
		if n := byStatus[o]; n > 0 {
			s, cl := statusWord(o)
			v.StatusCounts = append(v.StatusCounts, row{Name: o, Label: s, Value: n, Color: cl})
			delete(byStatus, o)
		}
	}
	for _, o := range sortedKeys(byStatus) {
		s, cl := statusWord(o)
		v.StatusCounts = append(v.StatusCounts, row{Name: o, Label: s, Value: byStatus[o], Color: cl})
	}
	v.Status, v.StatusClass = statusWord(worst)
	if len(r.Runs) == 0 {
		v.Status, v.StatusClass = "No runs", "warn"
	}
}

// countRows lays the counts out as the page's tiles and tables.
func (v *view) countRows(c map[string]int) {
	v.Tiles = []row{
		{Name: "compared_pairs", Label: "pairs compared", Value: c["compared_pairs"], Color: "#94a3b8"},
		{Name: "d365->campaign", Label: "Dynamics → Campaign", Value: c["d365->campaign"], Color: trendSeries[0].Color},
		{Name: "campaign->d365", Label: "Campaign → Dynamics", Value: c["campaign->d365"], Color: trendSeries[1].Color},
		{Name: "opt_outs_cleared", Label: "opt-outs cleared", Value: c["opt_outs_cleared"], Color: trendSeries[2].Color},
		{Name: "skipped", Label: "pairs skipped", Value: c["skipped"], Color: "#94a3b8"},
		{Name: "rejected", Label: "rows rejected", Value: c["rejected"], Color: trendSeries[3].Color},
		{Name: "failed", Label: "writes failed", Value: c["failed"], Color: trendSeries[4].Color},
	}
	v.Directions = []row{
		{Name: "d365->campaign", Label: "Dynamics → Campaign", Value: c["d365->campaign"], Color: trendSeries[0].Color},
		{Name: "campaign->d365", Label: "Campaign → Dynamics", Value: c["campaign->d365"], Color: trendSeries[1].Color},
	}
	skippedKnown := 0
	for _, k := range sortedKeys(c) {
		switch {
		case strings.HasPrefix(k, "rule:"):
			name := strings.TrimPrefix(k, "rule:")
			v.Rules = append(v.Rules, row{Name: k, Label: name, Note: ruleNotes[name], Value: c[k]})
		case strings.HasPrefix(k, "skipped:"):
			name := strings.TrimPrefix(k, "skipped:")
			code, _, _ := strings.Cut(name, ":")
			v.Skipped = append(v.Skipped, row{Name: k, Label: name, Note: skipNotes[code], Value: c[k]})
			skippedKnown += c[k]
		}
		v.AllCounts = append(v.AllCounts, row{Name: k, Label: label(k), Value: c[k]})
	}
	if rest := c["skipped"] - skippedKnown; rest > 0 {
		v.Skipped = append(v.Skipped, row{Label: "(reason not recorded)", Note: "runs recorded before reasons were kept", Value: rest})
	}
	slices.SortStableFunc(v.Rules, func(a, b row) int { return b.Value - a.Value })
	for _, k := range notCompared {
		if c[k] > 0 {
			v.NotCompared = append(v.NotCompared, row{Name: k, Label: label(k), Value: c[k]})
		}
	}
}

// charts draws the direction, rule and trend charts, each only when it has
// something to show.
func (v *view) charts(r *Report) error {
	c := r.Counts
	var err error
	if c["d365->campaign"]+c["campaign->d365"] > 0 {
		// Top to bottom as in the table: a horizontal chart counts up.
		names := []string{"Campaign → Dynamics", "Dynamics → Campaign"}
		vals := []float64{float64(c["campaign->d365"]), float64(c["d365->campaign"])}
		if v.DirectionChart, err = barChart(names, vals, []string{trendSeries[1].Color, trendSeries[0].Color}, true, 4*vg.Inch, 1.3*vg.Inch); err != nil {
			return err
		}
	}
	if len(v.Rules) > 0 {
		names := make([]string, len(v.Rules))
		vals := make([]float64, len(v.Rules))
		// Largest at the top: a horizontal chart counts up from the bottom.
		for i, rr := range v.Rules {
			names[len(v.Rules)-1-i], vals[len(v.Rules)-1-i] = rr.Label, float64(rr.Value)
		}
		h := vg.Length(len(names))*0.3*vg.Inch + 0.7*vg.Inch
		if v.RuleChart, err = barChart(names, vals, []string{"#64748b"}, true, 4*vg.Inch, h); err != nil {
			return err
		}
	}
	if len(r.Trend) > 0 {
		if v.TrendChart, err = trendChart(r.Trend, 7*vg.Inch, 2.6*vg.Inch); err != nil {
			return err
		}
	}
	return nil
}

// explain says in a sentence what the outcome means for the reader.
func explain(r *Report) string {
	c := r.Counts
	switch r.Run.Outcome {
	case "ok":
		if c["d365->campaign"]+c["campaign->d365"] == 0 {
			return "Nothing needed writing: both systems already agree on every pair that could be compared."
		}
		return "Every write decided is in the run's update files or was applied through the APIs."
	case "planned":
		return "A plan: what a run with these inputs would do. Nothing was written and state was not changed."
	case "failed-writes":
		return fmt.Sprintf("%s writes were refused or not sent by a service; they are queued and the next run tries them again.", num(c["failed"]))
	case "safety-stop":
		// A stopped run counts no writes; what it would have cleared is
		// would_clear (runs recorded before it counted them as cleared).
		clears := c["would_clear"]
		if _, ok := c["would_clear"]; !ok {
			clears = c["opt_outs_cleared"]
		}
		limit := ""
		if r.Config != nil {
			limit = fmt.Sprintf(" (safety.max_optin %s allowed %s)", r.Config.MaxOptin, num(r.Config.Limit))
		}
		if r.Config == nil || clears > r.Config.Limit {
			return fmt.Sprintf("This run would have cleared %s opt-outs, more than the safety limit%s. Nothing was written. Check the examples with optsync plan; rerun with --allow-mass-optin if they are right.", num(clears), limit)
		}
		var lacks []string
		for _, side := range [][3]string{{"Dynamics", "d365_missing", "d365_known"}, {"Campaign", "campaign_missing", "campaign_known"}} {
			if c[side[1]] > 0 {
				lacks = append(lacks, fmt.Sprintf("the %s input lacked %s of the %s records state knows there", side[0], num(c[side[1]]), num(c[side[2]])))
			}
		}
		return fmt.Sprintf("This run's full read lacked too many of the records state knows (safety.max_missing): %s. Nothing was written or dropped. Check that the export is complete; rerun with --allow-missing if those records are really gone.", strings.Join(lacks, "; "))
	case "interrupted":
		return "The run was stopped (a signal, or the process died). What it had applied through the APIs is kept; the next run does the rest."
	case "running":
		return "The run had not finished when this report was written."
	}
	return "The run failed; the next run does its work again."
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// num writes a count with its thousands separated: 11,668.
func num(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, d := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString(",")
		}
		b.WriteRune(d)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// dur writes a duration as a person reads it: 177 ms, 3.4 s, 2 min 13 s.
func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
}

// IsPeriod and IsPreview let the template say which page it is.
func (v *view) IsPeriod() bool  { return v.Kind == Period }
func (v *view) IsPreview() bool { return v.Kind == Preview }
