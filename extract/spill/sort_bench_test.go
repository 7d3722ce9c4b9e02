package spill

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// keyed is shaped like a profile held for the sort: an id, a string key
// and the rest of a 64-byte record.
type keyed struct {
	id   [16]byte
	pkey string
	rest [5]uint64
}

func benchKeyed(n int) []keyed {
	rng := rand.New(rand.NewPCG(1, 1))
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
	items := make([]keyed, n)
	var b strings.Builder
	for i := range items {
		b.Reset()
		b.WriteByte('@')
		for range 20 {
			b.WriteByte(chars[rng.IntN(len(chars))])
		}
		items[i].pkey = b.String()
		binary.BigEndian.PutUint64(items[i].id[:], rng.Uint64())
		binary.BigEndian.PutUint64(items[i].id[8:], rng.Uint64())
	}
	return items
}

// BenchmarkSortItems sorts a million records in memory, by a string (its
// first 8 bytes the key) and by a random id, as a backfill's sorts do.
func BenchmarkSortItems(b *testing.B) {
	items := benchKeyed(1_000_000)
	byKey := Codec[keyed]{
		Compare: func(a, b *keyed) int { return strings.Compare(a.pkey, b.pkey) },
		Key:     func(k *keyed) uint64 { return PrefixKey(k.pkey) },
	}
	byID := Codec[keyed]{
		Compare: func(a, b *keyed) int { return strings.Compare(string(a.id[:]), string(b.id[:])) },
		Key:     func(k *keyed) uint64 { return binary.BigEndian.Uint64(k.id[:8]) },
	}
	for _, bc := range []struct {
		name  string
		codec Codec[keyed]
	}{{"string", byKey}, {"id", byID}} {
		b.Run(bc.name, func(b *testing.B) {
			work := make([]keyed, len(items))
			for b.Loop() {
				b.StopTimer()
				copy(work, items)
				s := FromSlice(bc.codec, 0, "", 64, work)
				b.StartTimer()
				s.sortItems()
			}
		})
	}
}
