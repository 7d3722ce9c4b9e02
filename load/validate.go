package load

import (
	"context"
	"fmt"
	"io"
	"os"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
	"optsync/transform/sorts"
)

// Validation is validate's check of the inputs: each system's drop, read
// as a run reads it, and the rows a run would reject, by reason with the
// first examples (Tally): the same rows a backfill over these files (or a
// first run over the drops) lists in its rejects file. It writes nothing
// but its answer.
type Validation struct {
	// D365 and Campaign are the systems as the config names them.
	D365, Campaign extract.System
	// Reading reads as a run does; the tally takes its rejects.
	Reading *extract.Reading
	// Budgets and TmpDir are the run's, for the identity rules' sorts:
	// validate creates nothing of the config's, so they spill to the
	// system's temporary folder when TmpDir is not there yet.
	Budgets spill.Budgets
	TmpDir  string
}

// Check answers on out. Only a file that cannot be read as an export (a
// missing column, a broken file) fails it.
func (v Validation) Check(ctx context.Context, out io.Writer) error {
	var files [2][]extract.InputFile
	for i, s := range []extract.System{v.D365, v.Campaign} {
		switch {
		case s.API != extract.Source{}:
			fmt.Fprintf(out, "%s: read through the API (check it with --online)\n", s.Name)
		case s.Pattern == "":
			fmt.Fprintf(out, "%s: no csv configured (pass one to backfill)\n", s.Name)
		default:
			var err error
			if files[i], err = extract.DropFiles(s.Pattern); err != nil {
				return err
			} else if len(files[i]) == 0 {
				fmt.Fprintf(out, "%s %s: no files yet\n", s.Name, s.Pattern)
			}
		}
	}
	t := &Tally{}
	v.Reading.Rejects = t
	in, _, err := v.Reading.Read(ctx, files[0], files[1])
	if err != nil {
		return err
	}
	for i, rows := range []int{in.D365.Rows, in.Campaign.Rows} {
		if s := []extract.System{v.D365, v.Campaign}[i]; len(files[i]) > 0 {
			fmt.Fprintf(out, "%s %s: columns ok, %s\n", s.Name, s.Pattern, Plural(rows, "row"))
		}
	}
	dir := v.TmpDir
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = os.TempDir()
	}
	later := sorts.Rejects(v.Budgets.Rejects, dir)
	defer later.Close()
	o := transform.IdentifyOptions{D365Files: files[0], CampaignFiles: files[1], Later: later, Sorts: sorts.Identity{Budget: v.Budgets.ByContact, Dir: dir},
		Keys: in.Keys, ReadKeys: in.ReadKeys}
	if err := transform.IdentityRejects(in.Contacts, in.Profiles, o, t.Add); err != nil {
		return err
	}
	t.Write(out)
	return nil
}

// CheckOnline gets a token from each API the connections reach and checks
// the mapped fields against the live services (extract's CheckMapping),
// saying on out what it found; problems found are a *ProblemsError.
func (c *Connections) CheckOnline(ctx context.Context, o *extract.Options, out io.Writer) error {
	if c.Contacts == nil && c.Profiles == nil {
		fmt.Fprintln(out, "online: no system uses the API; nothing to check")
		return nil
	}
	var problems []string
	fields := Plural(len(o.D365.Fields), "mapped field")
	if c.Contacts != nil {
		found, on, err := c.Contacts.API.CheckMapping(ctx, o.D365.Fields, o.DataverseConn.Tracking())
		if err != nil {
			return err
		}
		if problems = found; len(problems) == 0 {
			fmt.Fprintf(out, "d365 %s: token ok, %s exist and are boolean, change tracking %v\n", o.DataverseConn.URL, fields, on)
		}
	}
	if cc := &o.CampaignConn; c.Profiles != nil {
		found, err := c.Profiles.API.CheckMapping(ctx, o.Campaign.Fields, cc)
		if err != nil {
			return err
		}
		if problems = append(problems, found...); len(found) == 0 {
			fmt.Fprintf(out, "campaign %s: token ok, organization %s answers, %s boolean on %s\n", cc.BaseURL, cc.Organization, fields, cc.Resource)
		}
	}
	for _, p := range problems {
		fmt.Fprintln(out, "problem:", p)
	}
	if len(problems) > 0 {
		return &ProblemsError{N: len(problems)}
	}
	return nil
}

// ProblemsError is what a check found wrong with the config, each problem
// printed as found: the command exits 2.
type ProblemsError struct{ N int }

func (e *ProblemsError) Error() string { return Plural(e.N, "problem") }
