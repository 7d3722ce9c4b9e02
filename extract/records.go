package extract

import (
	"encoding/binary"
	"errors"
)

// Records go to disk when a run sorts more of them than memory holds
// (extract/spill): these encodings are the sorter's, read back by the same
// process only, never kept.

var errRecord = errors.New("spilled record malformed")

func packValues(v *[MaxFields]Tri) uint16 {
	var x uint16
	for i, t := range v {
		x |= uint16(t&3) << (2 * i)
	}
	return x
}

func unpackValues(x uint16, v *[MaxFields]Tri) {
	for i := range v {
		v[i] = Tri(x >> (2 * i) & 3)
	}
}

// A record's encoding leaves out what most records do not have and
// writes its numbers no wider than they need to be, in fixed widths a
// flag byte names: a backfill past memory writes every record once and
// reads it back once, and on this kind of machine the pages a file write
// takes cost more than the encoding (a contact was 37 bytes, 28 now; a
// profile 33 bytes and its PKey, 28 and its PKey). Fixed widths, not
// varints: the merge decodes every record, one after the other.
const (
	recBad        = 1 << iota
	recNoTime               // Modified is NoTime: not written
	recWideTime             // Modified takes 8 bytes, not 6
	recHighValues           // the values of fields past the fourth follow
	recFile                 // File follows (2 bytes); else it is 0
	recETag                 // a contact's ETag follows (4 bytes); else it is 0
	recUnlinked             // a profile's
	recTimes                // a profile's field times follow (8 × 8 bytes)
	recNoID       = recETag // a profile's: its ID is zero, not written
)

// timeBits are the bits a time usually takes: milliseconds within
// some 4,400 years of 1970.
const timeBits = 48

// appendCommon writes what contacts and profiles both have, after the
// flags byte at dst[at] (to which it adds its own flags) and what the
// caller wrote before.
func appendCommon(dst []byte, at int, modified int64, values *[MaxFields]Tri, line int32, file uint16) []byte {
	v := packValues(values)
	dst = append(dst, byte(v))
	if v>>8 != 0 {
		dst[at] |= recHighValues
		dst = append(dst, byte(v>>8))
	}
	switch {
	case modified == NoTime:
		dst[at] |= recNoTime
	case modified<<(64-timeBits)>>(64-timeBits) == modified:
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(modified))
		dst = append(dst, b[:timeBits/8]...)
	default:
		dst[at] |= recWideTime
		dst = binary.LittleEndian.AppendUint64(dst, uint64(modified))
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(line))
	if file != 0 {
		dst[at] |= recFile
		dst = binary.LittleEndian.AppendUint16(dst, file)
	}
	return dst
}

// decodeCommon reads what appendCommon wrote at the start of b, as the
// flags f say, and returns the rest of b; false when b is too short.
func decodeCommon(b []byte, f byte, modified *int64, values *[MaxFields]Tri, line *int32, file *uint16) ([]byte, bool) {
	n := 1 + 4
	if f&recHighValues != 0 {
		n++
	}
	switch f & (recNoTime | recWideTime) {
	case 0:
		n += timeBits / 8
	case recWideTime:
		n += 8
	case recNoTime:
	default:
		return nil, false
	}
	if f&recFile != 0 {
		n += 2
	}
	if len(b) < n {
		return nil, false
	}
	le := binary.LittleEndian
	v := uint16(b[0])
	b = b[1:]
	if f&recHighValues != 0 {
		v |= uint16(b[0]) << 8
		b = b[1:]
	}
	unpackValues(v, values)
	switch f & (recNoTime | recWideTime) {
	case 0:
		*modified = int64(le.Uint64(b)<<(64-timeBits)) >> (64 - timeBits)
		b = b[timeBits/8:]
	case recWideTime:
		*modified = int64(le.Uint64(b))
		b = b[8:]
	default:
		*modified = NoTime
	}
	*line = int32(le.Uint32(b))
	b = b[4:]
	*file = 0
	if f&recFile != 0 {
		*file = le.Uint16(b)
		b = b[2:]
	}
	return b, true
}

// AppendContact encodes c.
func AppendContact(dst []byte, c *Contact) []byte {
	at := len(dst)
	var f byte
	if c.Bad {
		f |= recBad
	}
	dst = append(dst, f)
	dst = append(dst, c.ID[:]...)
	dst = appendCommon(dst, at, c.Modified, &c.Values, c.Line, c.File)
	if c.ETag != 0 {
		dst[at] |= recETag
		dst = binary.LittleEndian.AppendUint32(dst, c.ETag)
	}
	return dst
}

// DecodeContact reads what AppendContact wrote.
func DecodeContact(b []byte, c *Contact) error {
	const known = recBad | recNoTime | recWideTime | recHighValues | recFile | recETag
	if len(b) < 1+16 || b[0]&^known != 0 {
		return errRecord
	}
	f := b[0]
	copy(c.ID[:], b[1:])
	c.Bad = f&recBad != 0
	b, ok := decodeCommon(b[17:], f, &c.Modified, &c.Values, &c.Line, &c.File)
	c.ETag = 0
	if ok && f&recETag != 0 {
		if len(b) < 4 {
			return errRecord
		}
		c.ETag = binary.LittleEndian.Uint32(b)
		b = b[4:]
	}
	if !ok || len(b) != 0 {
		return errRecord
	}
	return nil
}

// AppendProfile encodes p, whose PKey and field times are in ks.
func AppendProfile(dst []byte, ks *Keys, p *Profile) []byte {
	at := len(dst)
	var f byte
	if p.Bad {
		f |= recBad
	}
	if p.Unlinked {
		f |= recUnlinked
	}
	if p.ID == (ID{}) {
		f |= recNoID
	}
	dst = append(dst, f)
	if f&recNoID == 0 {
		dst = append(dst, p.ID[:]...)
	}
	dst = appendCommon(dst, at, p.Modified, &p.Values, p.Line, p.File)
	var times [MaxFields]int64
	if ks.Times(p.FieldModified, &times) {
		dst[at] |= recTimes
		for _, t := range times {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(t))
		}
	}
	return append(dst, ks.Get(p.PKey)...)
}

// DecodeProfile reads what AppendProfile wrote, its PKey and field times
// into w.
func DecodeProfile(b []byte, w *KeyWriter, p *Profile) error {
	if len(b) < 1 {
		return errRecord
	}
	f := b[0]
	b = b[1:]
	p.ID = ID{}
	if f&recNoID == 0 {
		if len(b) < 16 {
			return errRecord
		}
		copy(p.ID[:], b)
		b = b[16:]
	}
	p.Bad, p.Unlinked = f&recBad != 0, f&recUnlinked != 0
	b, ok := decodeCommon(b, f, &p.Modified, &p.Values, &p.Line, &p.File)
	if !ok {
		return errRecord
	}
	p.FieldModified = 0
	if f&recTimes != 0 {
		if len(b) < 8*MaxFields {
			return errRecord
		}
		var times [MaxFields]int64
		for i := range times {
			times[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		p.FieldModified = w.PutTimes(&times)
		b = b[8*MaxFields:]
	}
	p.PKey = w.PutBytes(b)
	return nil
}

// ProfileSize is what a profile holds in memory beyond its struct: its
// PKey and its field times, in ks.
func ProfileSize(ks *Keys, p *Profile) int {
	n := ks.Len(p.PKey)
	if !p.FieldModified.Empty() {
		n += 8 * MaxFields
	}
	return n
}
