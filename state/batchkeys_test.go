package state

import (
	"bytes"
	"path/filepath"
	"slices"
	"testing"

	"optsync/extract"
	"optsync/transform"
)

// The index keys a batch notes for each record it puts are the ones the
// record, once encoded, holds (indexKeys of it parsed back): the commit
// indexes what it wrote. Every entry of one batch is checked after all are
// put, so that one noted in shared memory is not overwritten by the next.
func TestBatchKeysAsParsed(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cases := []struct {
		name string
		edit func(s *transform.Snapshot)
	}{
		{"no write pending", func(s *transform.Snapshot) {
			s.Pairs[0].CWritten, s.Pairs[1].DWritten = extract.Unknown, extract.Unknown
		}},
		{"one write each side, C before D", func(s *transform.Snapshot) {
			s.Pairs[0].CWrittenAt, s.Pairs[1].DWrittenAt = 1_780_000_000_000, 1_780_000_100_000
		}},
		{"D before C", func(s *transform.Snapshot) {
			s.Pairs[0].CWrittenAt, s.Pairs[1].DWrittenAt = 1_780_000_100_000, 1_780_000_000_000
		}},
		{"the same time twice", func(s *transform.Snapshot) {
			s.Pairs[0].CWrittenAt, s.Pairs[1].DWrittenAt = 1_780_000_000_000, 1_780_000_000_000
		}},
		{"both sides of one pair", func(s *transform.Snapshot) {
			s.Pairs[1].DWritten, s.Pairs[1].DWrittenAt = extract.Unknown, 0
			s.Pairs[0].DWritten, s.Pairs[0].DWrittenAt = extract.False, 1_780_000_200_000
			s.Pairs[0].CWrittenAt = 1_780_000_100_000
		}},
		{"a time not recorded", func(s *transform.Snapshot) {}},
		{"a time below zero", func(s *transform.Snapshot) { s.Pairs[0].CWrittenAt = -5 }},
		{"profile seen", func(s *transform.Snapshot) { s.CSeen = true }},
		{"profile seen, no PKey", func(s *transform.Snapshot) { s.CSeen, s.PKey = true, "" }},
		{"PKey kept, profile not seen", func(s *transform.Snapshot) { s.CSeen = false }},
	}
	for _, whole := range []bool{false, true} {
		b := st.NewBatch(1)
		b.wholePK = whole
		for n, c := range cases {
			s := snap(n + 1)
			c.edit(&s)
			b.putOver(id(n+1), &s, nil)
		}
		for i, c := range cases {
			from := uint32(0)
			if i > 0 {
				from = b.ends[i-1]
			}
			r, err := parseRecord(b.data[from:b.ends[i]])
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			pk, ats, err := indexKeys(&r, id(i+1))
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if whole {
				pk = nil // the index is written whole: not noted per record
			}
			if !bytes.Equal(b.newPK[i], pk) || (b.newPK[i] == nil) != (pk == nil) {
				t.Errorf("whole %v, %s: PKey key %q, the record holds %q", whole, c.name, b.newPK[i], pk)
			}
			if !slices.Equal(b.newAts[i], ats) {
				t.Errorf("whole %v, %s: pending times %v, the record holds %v", whole, c.name, b.newAts[i], ats)
			}
		}
	}
}

// The sealed copies a transaction's packed writes keep stay as sealed
// while more are made (bbolt holds them until it commits), whatever their
// size, and after a reset the arena makes them again in the same memory.
func TestSealArenaKeepsWhatItSealed(t *testing.T) {
	var a sealArena
	chunks := 0
	for round := range 2 {
		type kept struct{ k, payload, v []byte }
		var all []kept
		for i := range 3000 {
			k := []byte{byte(i >> 8), byte(i), byte(round)}
			payload := bytes.Repeat([]byte{byte(i)}, i%700+i/50*37) // up to past a quarter chunk
			all = append(all, kept{k, payload, a.seal(k, payload)})
		}
		for _, e := range all {
			got, err := unseal("contacts", e.k, e.v)
			if err != nil || !bytes.Equal(got, e.payload) || cap(e.v) != len(e.v) {
				t.Fatalf("round %d: key %x: %v (payload equal %v, cap %d len %d)", round, e.k, err, bytes.Equal(got, e.payload), cap(e.v), len(e.v))
			}
		}
		if round == 1 && len(a.chunks) != chunks {
			t.Fatalf("after a reset: %d chunks for the same values, %d before", len(a.chunks), chunks)
		}
		chunks = len(a.chunks)
		a.reset()
	}
}

// While the keys of the PKey index written whole are being sorted, chunks
// of records take none, and the chunks after take what they left, at most
// their own share again each; once the records are done, the rest go in
// chunks of their own. No key is lost or taken twice.
func TestKeysForChunksWhileSorting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ready []bool // per chunk of records, whether the keys are sorted
		want  []int
	}{
		{"ready from the start", []bool{true, true, true}, []int{10, 10, 10}},
		{"never asked (no sort)", nil, []int{10, 10, 10}},
		{"ready from the third", []bool{false, false, true, true, true}, []int{0, 0, 20, 20, 10}},
		{"ready from the fourth", []bool{false, false, false, true, true}, []int{0, 0, 0, 20, 20}},
		{"ready only after the records", []bool{false, false, false}, []int{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &committer{size: 10}
			chunk := 0
			if tc.ready != nil {
				c.o.PKeysReady = func() bool { return tc.ready[chunk] }
			}
			chunks := max(len(tc.ready), 3)
			var got []int
			for chunk = 0; chunk < chunks; chunk++ {
				got = append(got, c.keysFor(10, true))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("keys per chunk %v, want %v", got, tc.want)
			}
			sum := 0
			for _, k := range got {
				sum += k
			}
			if sum+c.owed != 10*chunks {
				t.Fatalf("%d keys taken and %d owed for %d records", sum, c.owed, 10*chunks)
			}
			if rest := c.keysFor(0, false); rest < c.size {
				t.Fatalf("after the records: %d keys a chunk, want at least %d", rest, c.size)
			}
		})
	}
}
