package transform

import (
	"cmp"
	"encoding/binary"
	"errors"
	"strings"

	"optsync/extract"
	"optsync/extract/spill"
)

// How the rows and entries the rules read are ordered and encoded when a
// sort spills them: the orders are the rules' (a record's rows together,
// in the order the rules place them); the sorters themselves, which may
// write to disk, are made by the caller with these codecs.

// Sizes of the records as held in memory (the struct; a profile's PKey
// comes on top: extract.ProfileSize), for the sorters' budgets.
const (
	ContactSize = 48
	ProfileSize = 64
	RejectSize  = 64
	PKeySize    = 32
)

// idKey is a sort key of records ordered by contact id first.
func idKey(id *extract.ID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

// ContactCodec orders contacts by id (ContactOrder).
func ContactCodec() spill.Codec[extract.Contact] {
	return spill.Codec[extract.Contact]{
		Compare: ContactOrder, Append: extract.AppendContact, Decode: extract.DecodeContact,
		Key: func(c *extract.Contact) uint64 { return idKey(&c.ID) },
	}
}

// ProfileCodec orders profiles by PKey (ProfilePKeyOrder) or byContact
// (ProfileContactOrder); what they name is in ks.
//
// A record read back from a run on disk names its PKey in blocks of its
// run's own (ks.Writer), kept for that record and the one before it: the
// merge hands on a run's previous record while it reads the next, and
// whoever keeps a record longer copies what it names (PKeyStream,
// ContactProfiles). So the runs of a sort larger than memory hold a
// few blocks each, not every PKey read back.
func ProfileCodec(ks *extract.Keys, byContact bool) spill.Codec[extract.Profile] {
	type runKeys struct {
		w    *extract.KeyWriter
		prev extract.Mark
	}
	// by the record a run reads into: the first few in a list (a merge
	// reads a handful of runs, and a map's lookup for every record read
	// back cost more than the record's decoding), any more in a map
	type runOf struct {
		p *extract.Profile
		r *runKeys
	}
	var few []runOf
	var more map[*extract.Profile]*runKeys
	find := func(p *extract.Profile) *runKeys {
		for i := range few {
			if few[i].p == p {
				return few[i].r
			}
		}
		if r := more[p]; r != nil {
			return r
		}
		r := &runKeys{w: ks.Writer()}
		if len(few) < fewRuns {
			few = append(few, runOf{p, r})
		} else {
			if more == nil {
				more = map[*extract.Profile]*runKeys{}
			}
			more[p] = r
		}
		return r
	}
	c := spill.Codec[extract.Profile]{
		Compare: func(a, b *extract.Profile) int { return ProfilePKeyOrder(ks, a, b) },
		Append:  func(dst []byte, p *extract.Profile) []byte { return extract.AppendProfile(dst, ks, p) },
		Decode: func(b []byte, p *extract.Profile) error {
			r := find(p)
			// Until a record starts a block, the blocks before the
			// previous record's are let go of already: letting go of
			// nothing cost a tenth of the merge.
			if m := r.w.Mark(); m != r.prev {
				r.w.ReleaseBefore(r.prev)
				r.prev = m
			}
			return extract.DecodeProfile(b, r.w, p)
		},
		Size: func(p *extract.Profile) int { return extract.ProfileSize(ks, p) },
		Key:  func(p *extract.Profile) uint64 { return spill.PrefixKey(ks.Get(p.PKey)) },
		Touch: func(p *extract.Profile) uint64 {
			return ks.Touch(p.PKey) + ks.Touch(p.FieldModified)
		},
	}
	if byContact {
		c.Compare = func(a, b *extract.Profile) int { return ProfileContactOrder(ks, a, b) }
		c.Key = func(p *extract.Profile) uint64 { return idKey(&p.ID) }
	}
	return c
}

// fewRuns is how many runs' keys ProfileCodec finds in a list rather
// than a map.
const fewRuns = 16

// RejectCodec orders the rejects found after reading (superseded rows,
// duplicates, entries kept out) by source and line, for the merge with the
// spool of those found while reading.
func RejectCodec() spill.Codec[extract.Reject] {
	return spill.Codec[extract.Reject]{
		Compare: func(a, b *extract.Reject) int {
			return cmp.Or(a.Source.Compare(b.Source), cmp.Compare(a.Line, b.Line))
		},
		Append: appendReject,
		Decode: decodeReject,
		Size:   func(r *extract.Reject) int { return len(r.Source.Name) + len(r.ID) + len(r.Reason) },
		Stable: true, // a reject found earlier stays first on its line
	}
}

func appendReject(dst []byte, r *extract.Reject) []byte {
	dst = binary.AppendUvarint(dst, uint64(r.Line))
	f := byte(r.Source.Kind) << 1 // a source's kind and its name
	if r.IDChecked {
		f |= 1
	}
	dst = append(dst, f)
	for _, s := range []string{r.Source.Name, r.ID, r.Reason} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

func decodeReject(b []byte, r *extract.Reject) error {
	line, n := binary.Uvarint(b)
	if n <= 0 || len(b) < n+1 {
		return errors.New("spilled reject malformed")
	}
	r.Line, r.IDChecked, r.Source.Kind = int(line), b[n]&1 == 1, extract.SourceKind(b[n]>>1)
	b = b[n+1:]
	for _, dst := range []*string{&r.Source.Name, &r.ID, &r.Reason} {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return errors.New("spilled reject malformed")
		}
		*dst, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	return nil
}

// PKeyEntry is a record linking contact ID to profile PKey: an entry of
// state's PKey index.
type PKeyEntry struct {
	PKey string
	ID   extract.ID
}

// PKeyCodec orders records' (PKey, contact): by PKey (for the PKey index
// written whole), or byID.
func PKeyCodec(byID bool) spill.Codec[PKeyEntry] {
	order := func(a, b *PKeyEntry) int { return cmp.Or(strings.Compare(a.PKey, b.PKey), a.ID.Compare(b.ID)) }
	key := func(e *PKeyEntry) uint64 { return spill.PrefixKey(e.PKey) }
	if byID {
		order = func(a, b *PKeyEntry) int { return cmp.Or(a.ID.Compare(b.ID), strings.Compare(a.PKey, b.PKey)) }
		key = func(e *PKeyEntry) uint64 { return idKey(&e.ID) }
	}
	return spill.Codec[PKeyEntry]{
		Compare: order, Key: key,
		Append: func(dst []byte, e *PKeyEntry) []byte { return append(append(dst, e.ID[:]...), e.PKey...) },
		Decode: func(b []byte, e *PKeyEntry) error {
			if len(b) < 16 {
				return errors.New("spilled PKey entry malformed")
			}
			copy(e.ID[:], b)
			e.PKey = string(b[16:])
			return nil
		},
		Size: func(e *PKeyEntry) int { return len(e.PKey) },
		// The entries come in contact order and their PKeys lie where the
		// rows were read, so a run written in PKey order reads each PKey
		// from anywhere: one cache miss after another (10 M contacts:
		// 0.95 s of the sort's 4 s) where a batch's may overlap.
		Touch: func(e *PKeyEntry) uint64 {
			if e.PKey == "" {
				return 0
			}
			return uint64(e.PKey[0]) + uint64(e.PKey[len(e.PKey)-1])
		},
	}
}
