package extract

import (
	"encoding/binary"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"optsync/extract/spill"
)

// BenchmarkSpillProfiles writes a sorted run of a million profiles, read
// in file order (their PKeys in key blocks in that order), as a backfill
// past its budget does: the time is the sort and the run's writing.
func BenchmarkSpillProfiles(b *testing.B) {
	const n = 1_000_000
	rng := rand.New(rand.NewPCG(3, 4))
	const keyChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
	ks := NewKeys()
	w := ks.Writer()
	items := make([]Profile, n)
	var k [21]byte
	for i := range items {
		k[0] = '@'
		for j := 1; j < len(k); j++ {
			k[j] = keyChars[rng.IntN(len(keyChars))]
		}
		items[i] = Profile{PKey: w.PutBytes(k[:]), Modified: rng.Int64(), Line: int32(i + 2)}
		binary.BigEndian.PutUint64(items[i].ID[:], rng.Uint64())
	}
	codec := benchProfileCodec(ks)
	codec.Touch = func(p *Profile) uint64 { return ks.Touch(p.PKey) + ks.Touch(p.FieldModified) }

	benchSpill(b, codec, items, 64, 64+21)
}

// BenchmarkSpillContacts writes a sorted run of a million contacts.
func BenchmarkSpillContacts(b *testing.B) {
	const n = 1_000_000
	rng := rand.New(rand.NewPCG(5, 6))
	items := make([]Contact, n)
	for i := range items {
		binary.BigEndian.PutUint64(items[i].ID[:], rng.Uint64())
		binary.BigEndian.PutUint64(items[i].ID[8:], rng.Uint64())
		items[i].Modified, items[i].Line = rng.Int64(), int32(i+2)
	}
	codec := benchContactCodec()
	codec.Key = func(c *Contact) uint64 { return binary.BigEndian.Uint64(c.ID[:8]) }
	benchSpill(b, codec, items, 48, 48)
}

// benchSpill adds items to a sorter whose budget the last one fills, and
// times that last Add (the sort and the run's writing); elem is a
// record's size, per what one holds in all.
func benchSpill[T any](b *testing.B, codec spill.Codec[T], items []T, elem, per int) {
	dir := b.TempDir()
	var cpu time.Duration // the process's, while timed: steadier than wall on a shared machine
	for b.Loop() {
		b.StopTimer()
		s := spill.NewSorter(codec, int64(len(items)*per), dir, elem)
		s.Reserve(len(items))
		for i := range items[:len(items)-1] {
			if err := s.Add(&items[i]); err != nil {
				b.Fatal(err)
			}
		}
		if s.Spilled != 0 {
			b.Fatal("spilled early")
		}
		b.StartTimer()
		before := cpuTime()
		if err := s.Add(&items[len(items)-1]); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - before
		b.StopTimer()
		if s.Spilled != 1 {
			b.Fatal("did not spill")
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
