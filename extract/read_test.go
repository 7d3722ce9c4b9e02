package extract

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"optsync/extract/spill"
	"optsync/fixtures/testkit"
)

type rejects struct{ got []Reject }

func (r *rejects) Add(x Reject) { r.got = append(r.got, x) }
func (r *rejects) Err() error   { return nil }

type bar struct{}

func (bar) Reader(r io.Reader) io.Reader { return r }
func (bar) Done()                        {}

func testReading(t *testing.T, rj RejectSink) *Reading {
	byID := func(a, b *Contact) int { return cmp.Or(a.ID.Compare(b.ID), cmp.Compare(a.File, b.File)) }
	ks := NewKeys()
	return &Reading{
		Contacts:       spill.NewSorter(spill.Codec[Contact]{Compare: byID, Append: AppendContact, Decode: DecodeContact}, 0, t.TempDir(), 48),
		Profiles:       spill.NewSorter(benchProfileCodec(ks), 0, t.TempDir(), 56),
		Keys:           ks.Writer(),
		D365Layout:     Layout{Fields: []string{"donotemail"}},
		CampaignLayout: Layout{Fields: []string{"blackListEmail"}},
		Incremental:    true,
		Rejects:        rj,
		Stage:          func(string, int64, string) Bar { return bar{} },
	}
}

// TestReadFilesAndQueue: each row remembers its input; both sides' rows,
// rejects and counts come back; the retry queue's contacts as state knows
// them come as one more Dynamics input, after the files.
func TestReadFilesAndQueue(t *testing.T) {
	dir := t.TempDir()
	in := func(name, content string) InputFile {
		p := filepath.Join(dir, name)
		testkit.WriteFile(t, p, content)
		return InputFile{Path: p, Size: int64(len(content))}
	}
	d365 := []InputFile{
		in("d1.csv", testkit.Contacts(testkit.GUID(1)+",2026-11-20T10:00:00Z,true")),
		in("d2.csv", testkit.Contacts(testkit.GUID(2)+",2026-11-20T10:00:00Z,false", "not-a-guid,2026-11-20T10:00:00Z,true")),
	}
	camp := []InputFile{in("c.csv", testkit.Profiles("@p1,"+testkit.GUID(1)+",2026-11-20 09:00:00.000Z,false"))}
	rj := &rejects{}
	r := testReading(t, rj)
	id3, _ := ParseID(testkit.GUID(3))
	r.D365From.Queue = []Queued{{Contact: id3}}
	r.Known = []Contact{{ID: id3, Line: 1}}
	recs, d365After, err := r.Read(context.Background(), d365, camp)
	if err != nil {
		t.Fatal(err)
	}
	defer recs.Close()
	if len(d365After) != 3 || d365After[2].Source() != RetryQueue(Source{}) {
		t.Fatalf("inputs after the queue: %+v", d365After)
	}
	if recs.D365.Rows != 3 || recs.D365.Rejected != 1 || recs.Campaign.Rows != 1 || len(rj.got) != 1 || rj.got[0].Source != File(d365[1].Path) {
		t.Errorf("counts %+v %+v, rejects %+v", recs.D365, recs.Campaign, rj.got)
	}
	if recs.FullD365 || recs.FullCampaign {
		t.Error("a run from files read changes, not every record")
	}
	rows, _ := recs.Contacts.InMemory()
	want := map[string]uint16{testkit.GUID(1): 0, testkit.GUID(2): 1, testkit.GUID(3): 2}
	if len(rows) != 3 {
		t.Fatalf("contacts %+v", rows)
	}
	for _, c := range rows {
		if f, ok := want[c.ID.String()]; !ok || c.File != f {
			t.Errorf("contact %s from input %d, want %d", c.ID, c.File, f)
		}
	}
}

// TestReadMissingFile: an input gone between listing and reading is an
// InputError naming it, and no queue is read after it.
func TestReadMissingFile(t *testing.T) {
	r := testReading(t, &rejects{})
	r.Incremental = false
	gone := filepath.Join(t.TempDir(), "gone.csv")
	_, _, err := r.Read(context.Background(), []InputFile{{Path: gone}}, nil)
	var ie *InputError
	if !errors.As(err, &ie) || err.Error() != "input "+gone+" does not exist" {
		t.Errorf("got %v", err)
	}
}

// TestReadingSizesSortersOnce: reading exports of more records than a
// sorter starts with room for, over two files a side, the sorters make
// room for all of them with their first record, from the files' sizes and
// the bytes per row of the first part: the records are never copied to a
// larger array, and the room left over is a few percent.
func TestReadingSizesSortersOnce(t *testing.T) {
	const n = 70_000 // past the 64 Ki records a sorter starts with unannounced
	c, p := benchExports(n)
	dir := t.TempDir()
	files := func(name string, b []byte) []InputFile {
		header := b[:bytes.IndexByte(b, '\n')+1]
		mid := len(b) / 3
		mid += bytes.IndexByte(b[mid:], '\n') + 1
		parts := [][]byte{b[:mid], append(append([]byte{}, header...), b[mid:]...)}
		var in []InputFile
		for i, part := range parts {
			path := filepath.Join(dir, fmt.Sprintf("%s%d.csv", name, i))
			testkit.WriteFile(t, path, string(part))
			in = append(in, InputFile{Path: path, Size: int64(len(part))})
		}
		return in
	}
	r := testReading(t, &rejects{})
	r.Contacts = spill.NewSorter(benchContactCodec(), 1<<30, t.TempDir(), 48)
	r.Profiles = spill.NewSorter(benchProfileCodec(r.Keys.Keys()), 1<<30, t.TempDir(), 56)
	r.D365Layout = Layout{Fields: []string{"donotemail", "donotbulkemail", "donotphone", "donotsendmm"}}
	r.CampaignLayout = Layout{Fields: []string{"blackListEmail", "blackListMobile", "blackListPhone", "blackListPostalMail"}}
	recs, _, err := r.Read(context.Background(), files("d365_", c), files("campaign_", p))
	if err != nil {
		t.Fatal(err)
	}
	defer recs.Close()
	for _, s := range []struct {
		name      string
		grew      int
		held, cap int
	}{
		{"contacts", recs.Contacts.Grew, recs.Contacts.Len(), capOf(recs.Contacts.InMemory())},
		{"profiles", recs.Profiles.Grew, recs.Profiles.Len(), capOf(recs.Profiles.InMemory())},
	} {
		if s.held != n {
			t.Fatalf("%s: %d held, want %d", s.name, s.held, n)
		}
		if s.grew != 0 || s.cap > n+n/20 {
			t.Errorf("%s: copied to a larger array %d times, room for %d of %d", s.name, s.grew, s.cap, n)
		}
	}
}

func capOf[T any](items []T, _ bool) int { return cap(items) }
