package state

import (
	"math"
	"reflect"
	"testing"

	"optsync/extract"
	"optsync/transform"
)

// fillRow sets every field of a row to a value of its own (none zero), so
// that an entry kept whole that lost a field, or a field added to the rows
// that the entry's encoding does not know, fails the round trip.
func fillRow(t *testing.T, v reflect.Value, seed int64) {
	t.Helper()
	for i := range v.NumField() {
		f, n := v.Field(i), seed+int64(i)*7919
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Struct: // the row a profile's side embeds
			fillRow(t, f, n)
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
			f.SetInt(n)
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
			f.SetUint(uint64(n % 251))
		case reflect.String:
			f.SetString("pk-" + reflect.ValueOf(n).String())
		case reflect.Array:
			for k := range f.Len() {
				switch e := f.Index(k); e.Kind() {
				case reflect.Uint8:
					if f.Type() == reflect.TypeOf(extract.ID{}) {
						e.SetUint(uint64(n+int64(k)) % 256)
					} else { // values: Unknown, False, True
						e.SetUint(uint64(k+int(n)) % 3)
					}
				default:
					t.Fatalf("field %s: an array of %s the test does not fill", v.Type().Field(i).Name, e.Kind())
				}
			}
		case reflect.Pointer:
			times := new([extract.MaxFields]int64)
			for k := range times {
				times[k] = n*1000 + int64(k)
			}
			times[3] = extract.NoTime
			f.Set(reflect.ValueOf(times))
		default:
			t.Fatalf("field %s of kind %s: the test does not fill it", v.Type().Field(i).Name, f.Kind())
		}
	}
}

func TestDirtyEntriesKeptWhole(t *testing.T) {
	var c extract.Contact
	var p transform.ProfileSide
	fillRow(t, reflect.ValueOf(&c).Elem(), 1_700_000_000_000)
	fillRow(t, reflect.ValueOf(&p).Elem(), 1_600_000_000_000)
	// A side's row names nothing (transform.ProfileSideOf): its PKey and
	// field times are the side's own.
	p.Profile.PKey, p.Profile.FieldModified = 0, 0
	id := extract.ID{9, 8, 7}
	same := func(c extract.Contact, p transform.ProfileSide) (extract.Contact, transform.ProfileSide) {
		c.ID, p.ID = id, id
		return c, p
	}
	sc, sp := same(c, p)
	unread := sp
	unread.Modified, unread.FieldModified, unread.PKey, unread.Line = extract.NoTime, nil, "", -1
	cases := []struct {
		name string
		e    transform.Entry
	}{
		{"pair", transform.Entry{Kind: transform.EntryPair, ID: id, HasC: true, HasP: true, C: sc, P: sp, CI: -1, PI: -1}},
		{"rows of other ids", transform.Entry{Kind: transform.EntryBlocked, ID: id, HasC: true, HasP: true, C: c, P: p, CI: -1, PI: -1}},
		{"contact only", transform.Entry{Kind: transform.EntryPair, ID: id, HasC: true, C: sc, CI: -1, PI: -1}},
		{"profile only", transform.Entry{Kind: transform.EntryConflict, ID: id, HasP: true, P: sp, CI: -1, PI: -1}},
		{"profile unreadable", transform.Entry{Kind: transform.EntryBlocked, ID: id, HasP: true, P: unread, CI: -1, PI: -1}},
		{"extremes", transform.Entry{Kind: transform.EntryPair, ID: id, HasC: true, HasP: true,
			C: extract.Contact{ID: id, Modified: math.MinInt64, ETag: math.MaxUint32, Line: math.MinInt32, File: math.MaxUint16},
			P: transform.ProfileSide{Profile: extract.Profile{ID: id, Modified: math.MaxInt64, Line: math.MaxInt32, File: math.MaxUint16}}, CI: -1, PI: -1}},
		{"lost", transform.Entry{Kind: transform.EntryLost, ID: id, CI: -1, PI: -1}},
	}
	for _, budget := range []int64{0, 1} { // in memory; each entry past the budget, in the file
		d := NewDirty(budget, t.TempDir(), nil, nil, nil, len(cases))
		for _, tc := range cases {
			if err := d.Add(&tc.e); err != nil {
				t.Fatal(err)
			}
		}
		next, err := d.reader()
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			var got transform.Entry
			ok, err := next(&got)
			if err != nil || !ok {
				t.Fatalf("budget %d, %s: %v %v", budget, tc.name, ok, err)
			}
			// the reader leaves the places at zero when the rows are not held
			want := tc.e
			want.CI, want.PI = 0, 0
			if !reflect.DeepEqual(got, want) {
				t.Errorf("budget %d, %s:\n got %+v\nwant %+v", budget, tc.name, got, want)
			}
		}
		if ok, err := next(new(transform.Entry)); ok || err != nil {
			t.Errorf("budget %d: an entry past the last: %v %v", budget, ok, err)
		}
		d.Close()
	}
}

// An entry kept whole takes less than the sorts' encoding of its rows
// (extract.AppendContact, AppendProfile): a backfill too large for memory
// writes one for every contact.
func TestDirtyEntryKeptWholeIsSmall(t *testing.T) {
	id := extract.ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	e := transform.Entry{Kind: transform.EntryPair, ID: id, HasC: true, HasP: true,
		C: extract.Contact{ID: id, Modified: 1_764_000_000_000, Line: 9_999_999, Values: [extract.MaxFields]extract.Tri{2, 1, 1, 2}},
		P: transform.ProfileSide{Profile: extract.Profile{ID: id, Modified: 1_764_000_000_000, Line: 9_999_999, Values: [extract.MaxFields]extract.Tri{2, 1, 1, 2}},
			PKey: "@l5Xz5z_34W-hCmV7GW50"}}
	d := NewDirty(0, t.TempDir(), nil, nil, nil, 1)
	if err := d.Add(&e); err != nil {
		t.Fatal(err)
	}
	ks := extract.NewKeys()
	row := e.P.Profile
	row.PKey = ks.Writer().Put(e.P.PKey)
	sorts := 2 + 1 + 16 + 1 + len(extract.AppendContact(nil, &e.C)) + len(extract.AppendProfile(nil, ks, &row))
	// The bound is two thirds of the sorts' encoding as it was when
	// entries kept whole were made smaller than it (a contact 37 bytes,
	// a profile 33 and its PKey); the sorts' encoding has shrunk since,
	// and an entry kept whole is not to grow back past that.
	old := 2 + 1 + 16 + 1 + 37 + 33 + len(e.P.PKey)
	if got := len(d.buf); got > old*2/3 || got >= sorts {
		t.Errorf("an entry kept whole takes %d bytes, the sorts' encoding %d (formerly %d)", got, sorts, old)
	}
}
