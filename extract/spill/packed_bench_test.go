package spill

import (
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

// keyedByID is a codec for keyed records as the sort by contact of a
// spilling backfill holds profiles: by id, the id and PKey encoded.
var keyedByID = Codec[keyed]{
	Compare: func(a, b *keyed) int { return strings.Compare(string(a.id[:]), string(b.id[:])) },
	Append: func(dst []byte, k *keyed) []byte {
		return append(append(append(dst, k.id[:]...), byte(len(k.pkey))), k.pkey...)
	},
	Decode: func(b []byte, k *keyed) error {
		if len(b) < 17 || len(b) != 17+int(b[16]) {
			return errors.New("bad length")
		}
		copy(k.id[:], b)
		k.pkey = string(b[17:])
		return nil
	},
	Key: func(k *keyed) uint64 { return binary.BigEndian.Uint64(k.id[:8]) },
}

// BenchmarkPackedWriteRun sorts and writes one half of a Packed as large
// as a 10 M backfill's sort by contact holds (1 GB memory_budget: halves of
// some 140 MB, 1.7 M records of 38 bytes), the records in the order a
// merge by PKey adds them (their ids at random).
func BenchmarkPackedWriteRun(b *testing.B) {
	const budget = 2 * 140 << 20
	items := benchKeyed(1_800_000)
	p := PackedOf(NewSorter(keyedByID, budget, b.TempDir(), 64), func() func(a, b []byte) int {
		return func(a, b []byte) int { return strings.Compare(string(a[:16]), string(b[:16])) }
	})
	defer p.Close()
	for i := range items {
		if p.Handed > 0 {
			b.Fatal("a half handed: fewer records, or a larger budget")
		}
		h := p.halves[p.cur]
		if h.chunk > 0 && h.used+int64(h.chunk) > int64(len(h.arena)) {
			break
		}
		if err := p.Add(&items[i]); err != nil {
			b.Fatal(err)
		}
	}
	h := p.halves[p.cur]
	var user time.Duration
	for b.Loop() {
		u := userTime()
		f, _, err := p.writeRun(h, packedAll)
		if err != nil {
			b.Fatal(err)
		}
		user += userTime() - u
		f.Close()
	}
	n := h.n
	b.ReportMetric(float64(user.Nanoseconds())/float64(b.N), "user-ns/op")
	b.ReportMetric(float64(n), "records")
}

// userTime is the CPU time the process spent in user mode (a run's write
// also costs system time, which a VM's page faults make vary).
func userTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano())
}
