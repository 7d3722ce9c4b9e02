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

// AppendContact encodes c.
func AppendContact(dst []byte, c *Contact) []byte {
	dst = append(dst, c.ID[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(c.Modified))
	dst = binary.LittleEndian.AppendUint32(dst, c.ETag)
	dst = binary.LittleEndian.AppendUint16(dst, packValues(&c.Values))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.Line))
	dst = binary.LittleEndian.AppendUint16(dst, c.File)
	var f byte
	if c.Bad {
		f = 1
	}
	return append(dst, f)
}

// DecodeContact reads what AppendContact wrote.
func DecodeContact(b []byte, c *Contact) error {
	if len(b) != 16+8+4+2+4+2+1 {
		return errRecord
	}
	le := binary.LittleEndian
	copy(c.ID[:], b)
	c.Modified = int64(le.Uint64(b[16:]))
	c.ETag = le.Uint32(b[24:])
	unpackValues(le.Uint16(b[28:]), &c.Values)
	c.Line = int32(le.Uint32(b[30:]))
	c.File = le.Uint16(b[34:])
	c.Bad = b[36]&1 != 0
	return nil
}

// AppendProfile encodes p, whose PKey and field times are in ks.
func AppendProfile(dst []byte, ks *Keys, p *Profile) []byte {
	dst = append(dst, p.ID[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.Modified))
	dst = binary.LittleEndian.AppendUint16(dst, packValues(&p.Values))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(p.Line))
	dst = binary.LittleEndian.AppendUint16(dst, p.File)
	var f byte
	if p.Bad {
		f |= 1
	}
	if p.Unlinked {
		f |= 2
	}
	var times [MaxFields]int64
	if ks.Times(p.FieldModified, &times) {
		f |= 4
	}
	dst = append(dst, f)
	if f&4 != 0 {
		for _, t := range times {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(t))
		}
	}
	return append(dst, ks.Get(p.PKey)...)
}

// DecodeProfile reads what AppendProfile wrote, its PKey and field times
// into w.
func DecodeProfile(b []byte, w *KeyWriter, p *Profile) error {
	const fixed = 16 + 8 + 2 + 4 + 2 + 1
	if len(b) < fixed {
		return errRecord
	}
	le := binary.LittleEndian
	copy(p.ID[:], b)
	p.Modified = int64(le.Uint64(b[16:]))
	unpackValues(le.Uint16(b[24:]), &p.Values)
	p.Line = int32(le.Uint32(b[26:]))
	p.File = le.Uint16(b[30:])
	f := b[32]
	p.Bad, p.Unlinked = f&1 != 0, f&2 != 0
	b = b[fixed:]
	p.FieldModified = 0
	if f&4 != 0 {
		if len(b) < 8*MaxFields {
			return errRecord
		}
		var times [MaxFields]int64
		for i := range times {
			times[i] = int64(le.Uint64(b[8*i:]))
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
