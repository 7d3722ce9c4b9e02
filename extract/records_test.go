package extract

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// recordCases are contacts and profiles with every optional part of the
// encoding present and absent: times of every width (NoTime, within 48
// bits, past them, negative), values of the fields past the fourth, a
// file, an ETag, no ID, field times, no PKey.
func recordCases(rng *rand.Rand, ks *KeyWriter) ([]Contact, []Profile) {
	times := []int64{NoTime, 0, -1, 1_764_000_000_000, -(1 << 47), 1<<47 - 1, 1 << 47, -(1 << 47) - 1, math.MaxInt64, math.MinInt64 + 1}
	var cs []Contact
	var ps []Profile
	for i := range 400 {
		var id ID
		if i%5 != 0 {
			for j := range id {
				id[j] = byte(rng.Uint32())
			}
		}
		var v [MaxFields]Tri
		for j := range v {
			if i%3 == 0 || j < 4 {
				v[j] = Tri(rng.IntN(3))
			}
		}
		m := times[i%len(times)]
		if i >= 3*len(times) {
			m = rng.Int64() >> rng.IntN(40)
		}
		line := int32(rng.Uint32() >> rng.IntN(32))
		file := uint16(0)
		if i%4 == 1 {
			file = uint16(rng.Uint32())
		}
		c := Contact{ID: id, Modified: m, Values: v, Line: line, File: file, Bad: i%7 == 0}
		if i%6 == 2 {
			c.ETag = rng.Uint32()
		}
		cs = append(cs, c)
		p := Profile{ID: id, Modified: m, Values: v, Line: line, File: file, Bad: i%7 == 3, Unlinked: i%9 == 4}
		if i%11 != 0 {
			p.PKey = ks.Put("@k" + string(rune('a'+i%26)) + "x")
		}
		if i%8 == 5 {
			ft := NoFieldTimes()
			ft[i%MaxFields] = m
			ft[(i+1)%MaxFields] = rng.Int64()
			p.FieldModified = ks.PutTimes(&ft)
		}
		ps = append(ps, p)
	}
	return cs, ps
}

// TestRecordsRoundTrip: what AppendContact and AppendProfile write reads
// back as the record written, whatever it holds, into a record that held
// another before.
func TestRecordsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ks := NewKeys()
	cs, ps := recordCases(rng, ks.Writer())
	back := NewKeys().Writer()
	for i := range cs {
		c := cs[i]
		b := AppendContact([]byte("before"), &c)[len("before"):]
		got := cs[(i+1)%len(cs)]
		if err := DecodeContact(b, &got); err != nil || got != c {
			t.Fatalf("contact %d: %+v reads back as %+v, %v", i, c, got, err)
		}
		p := ps[i]
		b = AppendProfile(nil, ks, &p)
		gotP := ps[(i+1)%len(ps)]
		if err := DecodeProfile(b, back, &gotP); err != nil {
			t.Fatalf("profile %d: %v", i, err)
		}
		var want, have [MaxFields]int64
		wantTimes, haveTimes := ks.Times(p.FieldModified, &want), back.Keys().Times(gotP.FieldModified, &have)
		if back.Keys().Get(gotP.PKey) != ks.Get(p.PKey) || wantTimes != haveTimes || want != have {
			t.Fatalf("profile %d: PKey %q times %v read back as %q %v", i, ks.Get(p.PKey), want, back.Keys().Get(gotP.PKey), have)
		}
		gotP.PKey, gotP.FieldModified, p.PKey, p.FieldModified = 0, 0, 0, 0
		if gotP != p {
			t.Fatalf("profile %d: %+v reads back as %+v", i, p, gotP)
		}
	}
}

// TestRecordsTellAMalformedOne: a contact's encoding cut short, one byte
// too long, or naming a part a contact does not have, is an error; so is
// a profile's cut short of its fixed part or its field times.
func TestRecordsTellAMalformedOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ks := NewKeys()
	cs, ps := recordCases(rng, ks.Writer())
	back := NewKeys().Writer()
	for i := range cs {
		b := AppendContact(nil, &cs[i])
		for n := range len(b) {
			if err := DecodeContact(b[:n], new(Contact)); !errors.Is(err, errRecord) {
				t.Fatalf("contact %d cut to %d of %d bytes: %v", i, n, len(b), err)
			}
		}
		if err := DecodeContact(append(b, 0), new(Contact)); !errors.Is(err, errRecord) {
			t.Fatalf("contact %d with a byte more: %v", i, err)
		}
		for _, f := range []byte{recUnlinked, recTimes, recNoTime | recWideTime} {
			x := append([]byte(nil), b...)
			x[0] |= f
			if err := DecodeContact(x, new(Contact)); !errors.Is(err, errRecord) {
				t.Fatalf("contact %d with flags %#x: %v", i, x[0], err)
			}
		}
		p := &ps[i]
		b = AppendProfile(nil, ks, p)
		fixed := len(b) - ks.Len(p.PKey) // what comes before the PKey
		for n := range fixed {
			if err := DecodeProfile(b[:n], back, new(Profile)); !errors.Is(err, errRecord) {
				t.Fatalf("profile %d cut to %d of %d bytes before its PKey: %v", i, n, fixed, err)
			}
		}
	}
}
