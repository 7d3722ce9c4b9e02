package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/d365sim"
	"optsync/fixtures/testkit"
)

// Reading more than the changes must never change a decision: a run that
// reads every contact again (an expired delta link), re-reads rows behind a
// watermark (an overlap), scans Campaign in full, or processes drop files
// again decides each contact exactly as the run that read only the changes.
// These tests play one night twice from one starting point — the same
// simulators' data and a copy of the same state file — once with the
// narrow read and once with the wide one, and compare every value the two
// runs leave in both systems.

// nightMapping is one mapped pair of the night tests.
type nightMapping struct {
	d365, campaign string
	invert         bool
}

var nightMappings = []nightMapping{
	{"donotemail", "blackListEmail", false},
	{"donotbulkemail", "blackList", false},
	{"donotphone", "blackListPhone", false},
	{"donotpostalmail", "blackListPostalMail", false},
	{"xx_smsconsent", "blackListMobile", true},
}

// swapHandler serves whatever handler it holds now: the same URL (kept in
// the config and in state's delta link) reaches one simulator, then its
// clone.
type swapHandler struct{ h atomic.Value }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.h.Load().(http.Handler).ServeHTTP(w, r)
}

// simNight is a project against both simulators, with a clock the test
// sets: every change time the simulators give (edits, optsync's writes,
// delta links) is the test's.
type simNight struct {
	*project
	t          *testing.T
	n          int
	clock      atomic.Int64 // Unix ms
	d          *d365sim.Server
	c          *campaignsim.Server
	dh, ch     *swapHandler
	dURL, cURL string
}

// edits is a night's edits: as the night, 3,300 for 12,000
// contacts.
func (s *simNight) edits() int { return s.n * 11 / 40 }

func (s *simNight) now() time.Time  { return time.UnixMilli(s.clock.Load()).UTC() }
func (s *simNight) set(t time.Time) { s.clock.Store(t.UnixMilli()) }

// tri draws an opt-out value: mostly not opted out, some opted out, a few
// blank.
func tri(rng *rand.Rand) *bool {
	switch x := rng.IntN(100); {
	case x < 4:
		return nil
	case x < 24:
		return testkit.Bool(true)
	}
	return testkit.Bool(false)
}

// newSimNight seeds n contacts and a profile for most of them (every 50th
// contact has none; 40 profiles have no contact): mostly in agreement, with
// some differences and blanks, change times spread over the year before
// the first sync.
func newSimNight(t *testing.T, n int, first time.Time, campaignExtra, d365Extra string) *simNight {
	t.Helper()
	s := &simNight{t: t, n: n, dh: &swapHandler{}, ch: &swapHandler{}}
	s.set(first)
	s.d = newD365Sim(t, d365sim.Options{ChangeTracking: true, OtherAttributes: map[string]string{"xx_smsconsent": "Boolean"}, Now: s.now})
	s.c = newCampaignSim(t, campaignsim.Options{ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}, Now: s.now, Seed: 1})
	s.dh.h.Store(http.Handler(s.d))
	s.ch.h.Store(http.Handler(s.c))
	s.dURL, s.cURL = serve(t, s.dh), serve(t, s.ch)

	rng := rand.New(rand.NewPCG(16, 1))
	year := first.Add(-365 * 24 * time.Hour)
	var cs []d365sim.Contact
	var ps []campaignsim.Profile
	for i := 1; i <= n; i++ {
		dc := d365sim.Contact{ID: testkit.GUID(i), ModifiedOn: year.Add(time.Duration(rng.Int64N(int64(360 * 24 * time.Hour)))).Truncate(time.Second),
			Fields: map[string]*bool{}}
		pr := campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: testkit.GUID(i),
			LastModified: year.Add(time.Duration(rng.Int64N(int64(360 * 24 * time.Hour)))), Fields: map[string]*bool{}}
		for _, m := range nightMappings {
			d := tri(rng)
			dc.Fields[m.d365] = d
			c := d
			if d != nil && m.invert {
				c = testkit.Bool(!*d)
			}
			if rng.IntN(100) < 6 { // the two systems disagree here
				c = tri(rng)
			}
			pr.Fields[m.campaign] = c
		}
		cs = append(cs, dc)
		if i%50 != 0 {
			ps = append(ps, pr)
		}
	}
	for i := n + 1; i <= n+40; i++ {
		ps = append(ps, campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: testkit.GUID(i), LastModified: year,
			Fields: map[string]*bool{"blackListEmail": testkit.Bool(true)}})
	}
	s.d.Seed(cs)
	s.c.Seed(ps)
	s.project = newProject(t, s.configFor(campaignExtra, d365Extra, nightMappings))
	return s
}

// config is the project's config against the two simulators.
func (s *simNight) configFor(campaignExtra, d365Extra string, ms []nightMapping) string {
	var b strings.Builder
	b.WriteString("direction: bidirectional\nmappings:\n")
	for _, m := range ms {
		fmt.Fprintf(&b, "  - d365: %s\n    campaign: %s\n", m.d365, m.campaign)
		if m.invert {
			b.WriteString("    invert: true\n")
		}
	}
	b.WriteString("safety:\n  max_optin: \"100%\"\n")
	b.WriteString(d365APISection(s.dURL, "  target: api\n"+d365Extra))
	b.WriteString(campaignAPISection(s.cURL, "  source: api\n  target: api\n  page_size: 1000\n  concurrency: 8\n"+campaignExtra))
	return b.String()
}

// runAt runs optsync with the simulators' clock at.
func (s *simNight) runAt(t *testing.T, at time.Time, args ...string) cliResult {
	t.Helper()
	s.set(at)
	r := s.project.cli(t, args...)
	if r.code != 0 && r.code != exitWriteFailed {
		t.Fatalf("%v: exit %d\n%s\n%s", args, r.code, r.stdout, lastLines(r.stderr, 20))
	}
	return r
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// nightKind says what a night holds besides edits at the night's times.
type nightKind struct {
	// backdated: a third of the edits carry a change time up to 400 days
	// before the night, older than what state may know of the record.
	backdated bool
	// deletes: one edit in a hundred deletes a Dynamics contact, and its
	// person changes something in Campaign the same night.
	deletes bool
}

// nightEdits makes a night of edits in both systems, each at its own
// explicit time between from and to: people subscribing and unsubscribing,
// saving a record without changing it, blanking a field, and now and then
// both systems changing one contact.
func (s *simNight) nightEdits(d *d365sim.Server, c *campaignsim.Server, seed uint64, edits int, from, to time.Time, kind nightKind) {
	rng := rand.New(rand.NewPCG(16, seed))
	step := to.Sub(from) / time.Duration(edits)
	for k := range edits {
		s.set(from.Add(time.Duration(k) * step))
		if kind.backdated && rng.IntN(3) == 0 {
			s.set(from.Add(-time.Duration(rng.Int64N(int64(400 * 24 * time.Hour)))))
		}
		i := 1 + rng.IntN(s.n)
		m := nightMappings[rng.IntN(len(nightMappings))]
		v := tri(rng)
		if kind.deletes && rng.IntN(100) == 0 {
			d.Delete(testkit.GUID(i))
			if i%50 != 0 {
				c.SetField(fmt.Sprintf("@p%d", i), m.campaign, v)
			}
			continue
		}
		if rng.IntN(2) == 0 {
			d.SetField(testkit.GUID(i), m.d365, v)
			continue
		}
		if i%50 == 0 {
			continue // no profile
		}
		c.SetField(fmt.Sprintf("@p%d", i), m.campaign, v)
	}
}

// values is every value both systems hold: contact fields and modifiedon,
// profile fields and lastModified.
func (s *simNight) values(d *d365sim.Server, c *campaignsim.Server, fields []nightMapping) map[string]string {
	out := map[string]string{}
	show := func(v *bool) string {
		if v == nil {
			return "null"
		}
		return fmt.Sprint(*v)
	}
	for i := 1; i <= s.n; i++ {
		ct, ok := d.Contact(testkit.GUID(i))
		if !ok {
			continue
		}
		for _, m := range fields {
			out[fmt.Sprintf("contact %d %s", i, m.d365)] = show(ct.Fields[m.d365])
		}
	}
	for _, p := range c.Profiles() {
		for _, m := range fields {
			out[fmt.Sprintf("profile %s %s", p.PKey, m.campaign)] = show(p.Fields[m.campaign])
		}
	}
	return out
}

// putStateBack puts an earlier copy of the state file back in its place,
// as a restore from a backup does: the record of the last commit beside it
// goes, as the copy is behind it on purpose (a file behind its record is
// taken for one that lost transactions).
func putStateBack(t *testing.T, from, db string) {
	t.Helper()
	copyFile(t, from, db)
	if err := os.Remove(db + ".committed"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

// copyFile copies a file (the state file) byte for byte.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// twoNights plays one night twice from the state after the first sync: A
// as a normal night, B after wide prepares it (expires the delta link,
// changes the config, …). It returns the values both runs left, and each
// run's audit rows by contact for the report of a difference.
type nightRun struct {
	values map[string]string
	audit  map[string][]string
	runID  string
}

func (s *simNight) audit(t *testing.T, runID string, fields []nightMapping) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range s.out(t, "audit", runID) {
		if !slices.ContainsFunc(fields, func(m nightMapping) bool { return m.d365 == r["d365_field"] }) {
			continue
		}
		out[r["contact_id"]] = append(out[r["contact_id"]], fmt.Sprintf("%s %s %s→%s %s d=%s c=%s %s %s",
			r["d365_field"], r["direction"], r["old_value"], r["new_value"], r["rule"], r["d365_modified"], r["campaign_modified"], r["outcome"], r["error"]))
	}
	return out
}

func compareNights(t *testing.T, a, b nightRun) {
	t.Helper()
	var diffs []string
	for k, va := range a.values {
		if vb := b.values[k]; vb != va {
			diffs = append(diffs, fmt.Sprintf("%s: narrow read %s, wide read %s", k, va, vb))
		}
	}
	for k := range b.values {
		if _, ok := a.values[k]; !ok {
			diffs = append(diffs, k+": only after the wide read")
		}
	}
	// Every decision too, skips included: the wide read audits exactly what
	// the narrow one does.
	for id, da := range a.audit {
		if db := b.audit[id]; !slices.Equal(da, db) {
			diffs = append(diffs, fmt.Sprintf("audit of contact %s: narrow read %v, wide read %v", id, da, db))
		}
	}
	for id, db := range b.audit {
		if _, ok := a.audit[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("audit of contact %s: only the wide read decided %v", id, db))
		}
	}
	slices.Sort(diffs)
	if len(diffs) == 0 {
		return
	}
	var msg strings.Builder
	fmt.Fprintf(&msg, "%d values differ between the narrow and the wide read of one night:\n", len(diffs))
	for _, d := range diffs[:min(len(diffs), 12)] {
		msg.WriteString("  " + d + "\n")
		var i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(strings.TrimPrefix(d, "contact "), "profile @p"), "%d", &i); err == nil {
			id := testkit.GUID(i)
			fmt.Fprintf(&msg, "    narrow: %v\n    wide:   %v\n", a.audit[id], b.audit[id])
		}
	}
	t.Fatal(msg.String())
}

// wideNight says how the two runs of one night differ: the config each
// runs with ("" keeps the project's), what is done to the clones before
// the wide run, each run's arguments, and the mappings whose values are
// compared (default every mapping).
type wideNight struct {
	nights           int // the night compared is the last (default 1)
	kind             nightKind
	configA, configB string
	prepareB         func(d *d365sim.Server, c *campaignsim.Server)
	argsA, argsB     []string
	compare          []nightMapping
}

// nightPair runs the first sync (and nights-1 nights), then one night
// twice from the same starting point: A, the narrow read, on the
// simulators; B, the wide read, on their clones with the state file as it
// was before A.
func (s *simNight) nightPair(t *testing.T, first time.Time, w wideNight) (nightRun, nightRun) {
	t.Helper()
	nights := max(w.nights, 1)
	w.argsA, w.argsB = cmpOr(w.argsA, []string{"run"}), cmpOr(w.argsB, []string{"run"})
	if w.compare == nil {
		w.compare = nightMappings
	}
	base, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	useConfig := func(c string) {
		if c == "" {
			c = string(base)
		}
		testkit.WriteFile(t, s.config, c)
	}
	useConfig(w.configA)
	s.runAt(t, first, w.argsA...)
	day := first
	for k := 1; k < nights; k++ {
		s.nightEdits(s.d, s.c, uint64(k), s.edits(), day.Add(time.Hour), day.Add(5*time.Hour), w.kind)
		day = day.Add(6 * time.Hour)
		s.runAt(t, day, w.argsA...)
	}
	db := s.path("optsync.db")
	saved := s.path("start.db")
	copyFile(t, db, saved)
	d2, c2 := s.d.Clone(), s.c.Clone()
	evening, night := day.Add(time.Hour), day.Add(6*time.Hour)
	s.nightEdits(s.d, s.c, uint64(nights), s.edits(), evening, night.Add(-time.Hour), w.kind)
	s.nightEdits(d2, c2, uint64(nights), s.edits(), evening, night.Add(-time.Hour), w.kind)
	if !mapsEqual(s.values(s.d, s.c, nightMappings), s.values(d2, c2, nightMappings)) {
		t.Fatal("the clones do not hold the same night")
	}
	ra := s.runAt(t, night, w.argsA...)
	a := nightRun{values: s.values(s.d, s.c, w.compare), audit: s.audit(t, ra.runID, w.compare), runID: ra.runID}
	s.dh.h.Store(http.Handler(d2))
	s.ch.h.Store(http.Handler(c2))
	putStateBack(t, saved, db)
	useConfig(w.configB)
	if w.prepareB != nil {
		w.prepareB(d2, c2)
	}
	rb := s.runAt(t, night, w.argsB...)
	b := nightRun{values: s.values(d2, c2, w.compare), audit: s.audit(t, rb.runID, w.compare), runID: rb.runID}
	if len(a.audit) < 500 {
		t.Fatalf("the night decided only %d contacts: not the night the test means", len(a.audit))
	}
	return a, b
}

func cmpOr(a, b []string) []string {
	if len(a) > 0 {
		return a
	}
	return b
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

const changedFilter = "  changed_filter: {name: Changed, param: since}\n"

// firstSync is when the first sync of a test of n nights runs: far enough
// back that every night's change times lie before the run's start.
func firstSync(nights int) time.Time {
	return time.Now().UTC().Add(-time.Duration(6*nights+4) * time.Hour).Truncate(time.Second)
}

// The run: an expired delta link (0x80044352) makes optsync read
// every contact again; the night must end exactly as with the delta read,
// every value in both systems and every decision. Also after nights whose
// edits carry change times older than what state knows of the record (the
// run the issue saw cleared opt-outs on the wide read: its writes went with
// the current row version, the narrow read's with one kept in state from
// before such an edit), and with contacts deleted while their profile
// changed.
func TestNightAfterExpiredDeltaLinkDecidesAsTheDelta(t *testing.T) {
	for _, tc := range []struct {
		name     string
		contacts int
		nights   int
		kind     nightKind
	}{
		{"a night of edits", 12000, 1, nightKind{}}, // the night
		{"the third night of edits, some dated back", 6000, 3, nightKind{backdated: true}},
		{"contacts deleted while their profile changed", 6000, 2, nightKind{deletes: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := firstSync(tc.nights)
			s := newSimNight(t, tc.contacts, first, changedFilter, "  page_size: 5000\n")
			a, b := s.nightPair(t, first, wideNight{nights: tc.nights, kind: tc.kind,
				prepareB: func(d *d365sim.Server, _ *campaignsim.Server) { d.ExpireDeltaTokens() }})
			compareNights(t, a, b)
		})
	}
}

// The class: every other way a run reads more than the changes (nights of
// 1,100 edits on 4,000 contacts: the same kinds of change, a third of the
// time).
func TestNightReadingMoreDecidesAsTheChanges(t *testing.T) {
	first := firstSync(1)
	for _, tc := range []struct {
		name                 string
		campaignA, campaignB string
		d365A, d365B         string
		addMapping           bool
	}{
		{name: "dataverse watermark overlap", campaignA: changedFilter, campaignB: changedFilter,
			d365A: "  change_tracking: false\n  overlap: 1s\n", d365B: "  change_tracking: false\n  overlap: 720h\n"},
		{name: "campaign changed-filter overlap", campaignA: changedFilter + "  overlap: 1s\n", campaignB: changedFilter + "  overlap: 720h\n"},
		{name: "campaign full scan", campaignA: changedFilter, campaignB: ""},
		{name: "added mapping", campaignA: changedFilter, campaignB: changedFilter, addMapping: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSimNight(t, 4000, first, tc.campaignA, tc.d365A)
			ms := nightMappings
			if tc.addMapping {
				ms = append(slices.Clone(nightMappings), nightMapping{"donotfax", "blackListFax", false})
			}
			a, b := s.nightPair(t, first, wideNight{configB: s.configFor(tc.campaignB, tc.d365B, ms)})
			compareNights(t, a, b)
		})
	}
}

// dropNight is a project over file drops whose Campaign export carries a
// per-field change time (emailOptOutDate for blackListEmail): the nights
// are files, the narrow read is the night's new files, the wide one
// `run --force` over every file of the drops.
type dropNight struct {
	*project
	n int
	// what each side holds now, as the exports write it
	d map[int][]string // contact i: modifiedon, donotemail, donotphone
	c map[int][]string // profile i: lastModified, blackListEmail, blackListPhone, emailOptOutDate
}

func triCell(rng *rand.Rand) string {
	if v := tri(rng); v != nil {
		return fmt.Sprint(*v)
	}
	return ""
}

func newDropNight(t *testing.T, n int, first time.Time) *dropNight {
	t.Helper()
	p := &dropNight{n: n, d: map[int][]string{}, c: map[int][]string{}}
	p.project = newProject(t, `direction: bidirectional
mappings:
  - d365: donotemail
    campaign: blackListEmail
    campaign_modified_column: emailOptOutDate
  - d365: donotphone
    campaign: blackListPhone
safety:
  max_optin: "100%"
d365:
  csv: drops/d365
campaign:
  csv: drops/campaign
`)
	rng := rand.New(rand.NewPCG(16, 3))
	year := first.Add(-365 * 24 * time.Hour)
	at := func() time.Time {
		return year.Add(time.Duration(rng.Int64N(int64(360 * 24 * time.Hour)))).Truncate(time.Second)
	}
	for i := 1; i <= n; i++ {
		p.d[i] = []string{at().Format(time.RFC3339), triCell(rng), triCell(rng)}
		lm, ft := at(), at()
		if ft.After(lm) {
			lm, ft = ft, lm // a field's change time is never after the profile's
		}
		p.c[i] = []string{lm.Format(campaignsim.TimeLayout), triCell(rng), triCell(rng), ft.Format(campaignsim.TimeLayout)}
	}
	return p
}

// write lays the records listed (nil: all) as the night's files.
func (p *dropNight) write(t *testing.T, name string, ds, cs []int) {
	t.Helper()
	all := func(m map[int][]string) []int {
		var ks []int
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	if ds == nil {
		ds = all(p.d)
	}
	if cs == nil {
		cs = all(p.c)
	}
	var b strings.Builder
	b.WriteString("contactid,modifiedon,donotemail,donotphone\n")
	for _, i := range ds {
		fmt.Fprintf(&b, "%s,%s\n", testkit.GUID(i), strings.Join(p.d[i], ","))
	}
	testkit.WriteFile(t, p.path("drops/d365/"+name+".csv"), b.String())
	b.Reset()
	b.WriteString("PKey,externalId,lastModified,blackListEmail,blackListPhone,emailOptOutDate\n")
	for _, i := range cs {
		fmt.Fprintf(&b, "@p%d,%s,%s\n", i, testkit.GUID(i), strings.Join(p.c[i], ","))
	}
	testkit.WriteFile(t, p.path("drops/campaign/"+name+".csv"), b.String())
}

// edits changes the records of a night, each at its own time: a Campaign
// edit of blackListEmail moves its emailOptOutDate; one of blackListPhone
// moves only lastModified.
func (p *dropNight) edits(seed uint64, n int, from, to time.Time) (ds, cs []int) {
	rng := rand.New(rand.NewPCG(16, seed))
	step := to.Sub(from) / time.Duration(n)
	dset, cset := map[int]bool{}, map[int]bool{}
	for k := range n {
		at := from.Add(time.Duration(k) * step)
		i := 1 + rng.IntN(p.n)
		f := 1 + rng.IntN(2)
		if rng.IntN(2) == 0 {
			p.d[i][0], p.d[i][f] = at.Format(time.RFC3339), triCell(rng)
			dset[i] = true
			continue
		}
		p.c[i][0], p.c[i][f] = at.Format(campaignsim.TimeLayout), triCell(rng)
		if f == 1 {
			p.c[i][3] = at.Format(campaignsim.TimeLayout)
		}
		cset[i] = true
	}
	for i := range dset {
		ds = append(ds, i)
	}
	for i := range cset {
		cs = append(cs, i)
	}
	slices.Sort(ds)
	slices.Sort(cs)
	return ds, cs
}

// decisions is a run's audit and update files, by record.
func (p *dropNight) decisions(t *testing.T, runID string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range p.out(t, "audit", runID) {
		k := "audit " + r["contact_id"] + " " + r["d365_field"]
		out[k] += fmt.Sprintf("[%s %s→%s %s d=%s c=%s %s %s]", r["direction"], r["old_value"], r["new_value"], r["rule"],
			r["d365_modified"], r["campaign_modified"], r["outcome"], r["error"])
	}
	for _, kind := range []string{"d365-updates", "campaign-updates"} {
		if _, err := os.Stat(p.path(filepath.Join("out", kind+"-"+runID+".csv"))); err != nil {
			continue
		}
		for _, r := range p.out(t, kind, runID) {
			k := kind + " " + r["contactid"] + r["PKey"]
			out[k] = fmt.Sprint(r)
		}
	}
	return out
}

// run --force over drop files already processed, and a night's drop that
// carries unchanged rows beside the changed ones (an export of everything),
// decide exactly as the night's changes alone: the same decisions, the
// same update rows. The Campaign side of a contact that did not change is
// its last known value with its last known time — the field's own change
// time, not lastModified, when the export gives one.
func TestDropsReadAgainDecideAsTheChanges(t *testing.T) {
	first := firstSync(2)
	for _, wide := range []string{"run --force", "a full export in the drop"} {
		t.Run(wide, func(t *testing.T) {
			p := newDropNight(t, 3000, first)
			p.write(t, "1", nil, nil)
			if r := p.cli(t, "run"); r.code != 0 {
				t.Fatalf("first night: exit %d\n%s", r.code, r.stderr)
			}
			copyFile(t, p.path("optsync.db"), p.path("start.db"))
			ds, cs := p.edits(2, 900, first.Add(time.Hour), first.Add(5*time.Hour))
			p.write(t, "2", ds, cs)
			ra := p.cli(t, "run")
			if ra.code != 0 {
				t.Fatalf("narrow: exit %d\n%s", ra.code, ra.stderr)
			}
			a := p.decisions(t, ra.runID)
			putStateBack(t, p.path("start.db"), p.path("optsync.db"))
			args := []string{"--config", p.config, "run", "--force"}
			if wide != "run --force" {
				// the night's files are an export of every record
				p.write(t, "2", nil, nil)
				args = args[:3]
			}
			rb := runCLI(t, args...)
			if rb.code != 0 {
				t.Fatalf("wide: exit %d\n%s", rb.code, rb.stderr)
			}
			b := p.decisions(t, rb.runID)
			if len(a) < 100 {
				t.Fatalf("the night decided only %d things: not the night the test means", len(a))
			}
			var diffs []string
			for k, va := range a {
				if b[k] != va {
					diffs = append(diffs, fmt.Sprintf("%s:\n    narrow %s\n    wide   %s", k, va, b[k]))
				}
			}
			for k, vb := range b {
				if _, ok := a[k]; !ok {
					diffs = append(diffs, fmt.Sprintf("%s: only the wide read: %s", k, vb))
				}
			}
			slices.Sort(diffs)
			if len(diffs) > 0 {
				t.Fatalf("%d decisions differ:\n%s", len(diffs), strings.Join(diffs[:min(len(diffs), 10)], "\n"))
			}
		})
	}
}

// A full read of Dynamics (here after a refused delta link) that no longer
// has a contact, nor its profile in the Campaign read, takes it as gone, as a delta read that reports it deleted
// does: a later change of its profile is not decided against a contact
// that is not there (a write that could only fail), and the next full read
// does not count it missing again.
func TestFullReadForgetsContactsGoneFromDynamics(t *testing.T) {
	p := newCampaignProject(t, 20, true, "  source: api\n  target: api\n"+changedFilter)
	// The first sync, and a night that reads back its writes: the Campaign
	// watermark is past the seeded profiles.
	for range 2 {
		if r := p.cli(t, "run"); r.code != 0 {
			t.Fatalf("first nights: exit %d\n%s", r.code, r.stderr)
		}
	}
	// Contact 1 (in step on both sides, never written) is deleted in
	// Dynamics; a full read does not have it, and nothing of its profile.
	p.dsim.Delete(testkit.GUID(1))
	p.dsim.ExpireDeltaTokens()
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "reading every contact again") {
		t.Fatalf("full read: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The person behind contact 1 unsubscribes in Campaign.
	p.csim.SetField("@p1", "blackListEmail", testkit.Bool(true))
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("a change of the gone contact's profile: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("decided against a contact Dynamics no longer has: %v", got)
	}
	p.dsim.ExpireDeltaTokens()
	if r = p.cli(t, "run"); r.code != 0 || strings.Contains(r.stdout, "d365_missing") {
		t.Fatalf("the second full read: exit %d\n%s", r.code, r.stdout)
	}
	var hist []struct {
		Counts map[string]int `json:"counts"`
	}
	jr := p.cli(t, "runs", "--format", "json")
	if err := json.Unmarshal([]byte(jr.stdout), &hist); err != nil || len(hist) == 0 {
		t.Fatalf("runs: %v\n%s", err, jr.stdout)
	}
	if n := hist[0].Counts["d365_missing"]; n != 0 {
		t.Fatalf("the second full read counted %d contacts missing again", n)
	}
}

// A drop folder keeps every night's files: a run knows those it processed
// by the stamp it saw them with (path, inode, size, times), without
// reading them again; a file touched since (its bytes the same) is read,
// known by its content and restamped, then known by its stamp again; a
// file written again under its old name is new.
func TestDropFilesKnownByTheirStamp(t *testing.T) {
	first := firstSync(2)
	p := newDropNight(t, 30, first)
	listed := hooks{listedAt: func() time.Time { return time.Now().Add(time.Hour) }}
	var knownWith func(t *testing.T, h hooks) (map[string]string, []string)
	// knownBy runs a night and says how each file already processed was
	// known ("its stamp", "its content"), by file name, and which files
	// the run read.
	knownBy := func(t *testing.T) (map[string]string, []string) {
		t.Helper()
		return knownWith(t, listed)
	}
	knownWith = func(t *testing.T, h hooks) (map[string]string, []string) {
		t.Helper()
		r := p.cliWith(t, h, "--log-level", "debug", "run")
		if r.code != 0 {
			t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
		}
		known := map[string]string{}
		for _, line := range strings.Split(r.stderr, "\n") {
			var e struct{ Message, File, Known_by string }
			if json.Unmarshal([]byte(line), &e) == nil && e.Message == "already processed" {
				rel, _ := filepath.Rel(p.dir, e.File)
				known[filepath.ToSlash(cmp.Or(rel, e.File))] = e.Known_by
			}
		}
		var read []string
		for _, f := range []string{"1", "2"} {
			for _, side := range []string{"d365", "campaign"} {
				name := "drops/" + side + "/" + f + ".csv"
				if _, err := os.Stat(p.path(name)); err == nil && known[name] == "" {
					read = append(read, name)
				}
			}
		}
		return known, read
	}
	p.write(t, "1", nil, nil)
	if known, read := knownBy(t); len(known) != 0 || len(read) != 2 {
		t.Fatalf("first night: known %v, read %v", known, read)
	}
	ds, cs := p.edits(2, 10, first.Add(time.Hour), first.Add(2*time.Hour))
	p.write(t, "2", ds, cs)
	known, read := knownBy(t)
	want := map[string]string{"drops/d365/1.csv": "its stamp", "drops/campaign/1.csv": "its stamp"}
	if !maps.Equal(known, want) || len(read) != 2 {
		t.Fatalf("second night: known %v, want %v; read %v", known, want, read)
	}
	old := time.Now().Add(-24 * time.Hour)
	if err := os.Chtimes(p.path("drops/d365/1.csv"), old, old); err != nil {
		t.Fatal(err)
	}
	want["drops/d365/1.csv"] = "its content"
	want["drops/d365/2.csv"], want["drops/campaign/2.csv"] = "its stamp", "its stamp"
	if known, read = knownBy(t); !maps.Equal(known, want) || len(read) != 0 {
		t.Fatalf("after a touch: known %v, want %v; read %v", known, want, read)
	}
	want["drops/d365/1.csv"] = "its stamp"
	if known, read = knownBy(t); !maps.Equal(known, want) || len(read) != 0 {
		t.Fatalf("after the restamp: known %v, want %v; read %v", known, want, read)
	}
	// the same name, other bytes: a new file
	ds, cs = p.edits(3, 10, first.Add(3*time.Hour), first.Add(4*time.Hour))
	p.write(t, "1", ds, cs)
	delete(want, "drops/d365/1.csv")
	delete(want, "drops/campaign/1.csv")
	if known, read = knownBy(t); !maps.Equal(known, want) || len(read) != 2 {
		t.Fatalf("night 1's files written again: known %v, want %v; read %v", known, want, read)
	}
	// Listed as they were written (a clock before their change times, so
	// that the test does not hang on its own speed), their stamps vouch
	// for nothing: read and known by their content.
	for f := range want {
		want[f] = "its content"
	}
	want["drops/d365/1.csv"], want["drops/campaign/1.csv"] = "its content", "its content"
	if known, read = knownWith(t, hooks{listedAt: func() time.Time { return time.Now().Add(-time.Hour) }}); !maps.Equal(known, want) || len(read) != 0 {
		t.Fatalf("files written a moment ago: known %v, want %v; read %v", known, want, read)
	}
}
