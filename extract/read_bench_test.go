package extract

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"optsync/extract/spill"
)

// benchExports makes n contacts and their profiles in the generator's
// shapes (fixtures/cmd/gen).
func benchExports(n int) (contacts, profiles []byte) {
	rng := rand.New(rand.NewPCG(7, 9))
	const keyChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
	var c, p bytes.Buffer
	c.WriteString("contactid,modifiedon,donotemail,donotbulkemail,donotphone,donotsendmm\n")
	p.WriteString("PKey,externalId,lastModified,blackListEmail,blackListMobile,blackListPhone,blackListPostalMail\n")
	b := func() string { return map[bool]string{true: "true", false: "false"}[rng.IntN(4) == 0] }
	for range n {
		id := fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", rng.Uint32(), rng.Uint32N(1<<16), rng.Uint32N(1<<12), rng.Uint32N(1<<12), rng.Uint64N(1<<48))
		fmt.Fprintf(&c, "%s,2025-05-27T06:36:%02dZ,%s,%s,%s,%s\n", id, rng.IntN(60), b(), b(), b(), b())
		var k strings.Builder
		k.WriteByte('@')
		for range 20 {
			k.WriteByte(keyChars[rng.IntN(len(keyChars))])
		}
		fmt.Fprintf(&p, "%s,%s,2024-07-27 02:50:%02d.724Z,%s,%s,%s,%s\n", k.String(), id, rng.IntN(60), b(), b(), b(), b())
	}
	return c.Bytes(), p.Bytes()
}

func benchProfileCodec(ks *Keys) spill.Codec[Profile] {
	w := ks.Writer()
	return spill.Codec[Profile]{
		Compare: func(a, b *Profile) int { return strings.Compare(ks.Get(a.PKey), ks.Get(b.PKey)) },
		Append:  func(dst []byte, p *Profile) []byte { return AppendProfile(dst, ks, p) },
		Decode:  func(b []byte, p *Profile) error { return DecodeProfile(b, w, p) },
		Size:    func(p *Profile) int { return ProfileSize(ks, p) },
		Key:     func(p *Profile) uint64 { return spill.PrefixKey(ks.Get(p.PKey)) },
	}
}

func benchContactCodec() spill.Codec[Contact] {
	return spill.Codec[Contact]{
		Compare: func(a, b *Contact) int { return a.ID.Compare(b.ID) },
		Append:  AppendContact, Decode: DecodeContact,
	}
}

// BenchmarkReadProfiles reads a profiles export into a sorter, as a
// backfill's read does (without the sort).
func BenchmarkReadProfiles(b *testing.B) {
	_, p := benchExports(200_000)
	l := Layout{Fields: []string{"blackListEmail", "blackListMobile", "blackListPhone", "blackListPostalMail"}}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		ks := NewKeys()
		s := spill.NewSorter(benchProfileCodec(ks), 0, b.TempDir(), 56)
		st, err := ReadProfiles(context.Background(), bytes.NewReader(p), "campaign.csv", l, ks.Writer(),
			func(p *Profile) { _ = s.Add(p) }, func(Reject) {})
		if err != nil || st.Rows != 200_000 || st.Rejected != 0 {
			b.Fatal(st, err)
		}
	}
}

// BenchmarkReadContacts reads a contacts export into a sorter.
func BenchmarkReadContacts(b *testing.B) {
	c, _ := benchExports(200_000)
	l := Layout{Fields: []string{"donotemail", "donotbulkemail", "donotphone", "donotsendmm"}}
	b.SetBytes(int64(len(c)))
	b.ReportAllocs()
	for b.Loop() {
		s := spill.NewSorter(benchContactCodec(), 0, b.TempDir(), 48)
		st, err := ReadContacts(context.Background(), bytes.NewReader(c), "d365.csv", l,
			func(c *Contact) { _ = s.Add(c) }, func(Reject) {})
		if err != nil || st.Rows != 200_000 || st.Rejected != 0 {
			b.Fatal(st, err)
		}
	}
}
