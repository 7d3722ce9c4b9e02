package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// walkFile is a sealed state file of many pages in several buckets (3,000
// contacts, their decision-log entries and its index, the PKey index, runs,
// meta), closed, and its bytes.
func walkFile(t *testing.T) (string, []byte) {
	t.Helper()
	st, path := sealedFile(t)
	run := &Run{ID: "20261130T020000Z-bbbbbb", Command: "backfill", Started: time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC), Outcome: "running"}
	if err := st.BeginRun(run); err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(3000)
	for n := 4; n < 3000; n++ {
		s := fullSnap(n)
		b.Put(id(n), &s)
		b.AddLog(LogEntry{RunStarted: run.Started, Seq: uint32(n), RunID: run.ID, Contact: id(n), PKey: s.PKey, Pair: 0,
			Direction: "d365->campaign", Rule: "only-d365-changed", Outcome: "applied", Old: "false", New: "true"}, run.ID, testPairs)
	}
	run.Outcome = "ok"
	if err := st.Commit(context.Background(), b, &Final{Run: run, Config: &ConfigRecord{Direction: "bidirectional", Policy: "newest", Pairs: testPairs}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, good
}

// leavesOf lists the leaf pages of each top-level bucket the file's newest
// meta page reaches.
func leavesOf(db []byte) map[string][]int {
	le := binary.LittleEndian
	leaves := map[string][]int{}
	var walk func(id uint64, bucket string)
	walk = func(id uint64, bucket string) {
		page := db[int(id)*pageSize:]
		count := int(le.Uint16(page[10:]))
		switch le.Uint16(page[8:]) {
		case branchPage:
			for i := range count {
				walk(le.Uint64(page[16+i*16+8:]), bucket)
			}
		case leafPage:
			leaves[bucket] = append(leaves[bucket], int(id))
			for i := range count {
				e := page[16+i*16:]
				if le.Uint32(e)&bucketLeaf != 0 {
					k := e[le.Uint32(e[4:]) : le.Uint32(e[4:])+le.Uint32(e[8:])]
					if root := le.Uint64(e[le.Uint32(e[4:])+le.Uint32(e[8:]):]); root != 0 {
						name := bucket
						if name == "" {
							name = string(k)
						}
						walk(root, name)
					}
				}
			}
		}
	}
	walk(newestMeta(db).root, "")
	return leaves
}

func newestMeta(db []byte) metaPage {
	m := parseMeta(db[:pageSize])
	if m1 := parseMeta(db[pageSize : 2*pageSize]); m1.problem == "" && m1.txid > m.txid {
		m = m1
	}
	return m
}

// rootBuckets is the root bucket's page of the file's newest meta page, and
// each top-level bucket's element there: its value's offset in the file.
func rootBuckets(t *testing.T, db []byte) map[string]int {
	t.Helper()
	le := binary.LittleEndian
	at := int(newestMeta(db).root) * pageSize
	page := db[at : at+pageSize]
	if le.Uint16(page[8:]) != leafPage {
		t.Fatalf("the root bucket is not one leaf page")
	}
	out := map[string]int{}
	for i := range int(le.Uint16(page[10:])) {
		e := page[16+i*16:]
		pos, ksize := int(le.Uint32(e[4:])), int(le.Uint32(e[8:]))
		k := e[pos : pos+ksize]
		out[string(k)] = at + 16 + i*16 + pos + ksize
	}
	return out
}

const pageSize = 4096 // bbolt's, on this machine

// The walk of a backfill's open takes the buckets on two goroutines: what
// it finds is what one walk in key order finds — on a sound file, the same
// seals found not matching, in the same order (as checkSeals names them);
// on a damaged one, the same first problem, which the walk in key order
// names. A page that two buckets reach (each walked on its own) is found
// as a page reached twice.
func TestParallelWalkFindsWhatOneWalkFinds(t *testing.T) {
	path, good := walkFile(t)
	buckets := rootBuckets(t, good)
	for _, name := range []string{"contacts", "runs", "log", "meta", "pkeys"} {
		if _, ok := buckets[name]; !ok {
			t.Fatalf("no bucket %s in the root: %v", name, buckets)
		}
	}
	le := binary.LittleEndian
	cases := []struct {
		name   string
		damage func(t *testing.T, db []byte)
		says   string // "": the file is sound (seals aside)
		seals  int    // the seals found not matching
	}{
		{"sound", func(*testing.T, []byte) {}, "", 0},
		{"seals in three buckets", func(t *testing.T, db []byte) {
			for _, b := range []string{"pkeys", "contacts", "log"} {
				flipValue(t, db, b)
			}
		}, "", 3},
		{"a page two buckets reach", func(t *testing.T, db []byte) {
			at, from := buckets["pkeys"], buckets["contacts"]
			if le.Uint64(db[at:]) == 0 || le.Uint64(db[from:]) == 0 {
				t.Fatalf("pkeys or contacts is held inline")
			}
			copy(db[at:at+8], db[from:from+8])
		}, "reached twice", 0},
		{"a leaf's element count in the log", func(t *testing.T, db []byte) {
			db[leavesOf(db)["log"][0]*pageSize+10] ^= 0x40
		}, "damaged", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := bytes.Clone(good)
			tc.damage(t, db)
			if err := os.WriteFile(path, db, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m := newestMeta(db)
			one := newPageWalk(f, int64(pageSize), m.pgid, true)
			one.tree(m.root, nil, nil, 0, "", 0)
			found, ok := parallelWalk(f, int64(pageSize), m, true)
			seals, err := walkPages(path, true)
			if tc.says != "" {
				var ce *CorruptError
				if ok || !errors.As(err, &ce) || !strings.Contains(one.problem, tc.says) || ce.Problem != one.problem {
					t.Fatalf("parallel ok %v, walk %v; the walk in key order found %q, want %q", ok, err, one.problem, tc.says)
				}
				return
			}
			if !ok || err != nil || one.problem != "" {
				t.Fatalf("parallel ok %v, walk %v, in key order %q", ok, err, one.problem)
			}
			if !slices.Equal(found.found, one.sealFound) || !slices.Equal(seals.found, one.sealFound) {
				t.Fatalf("seals found: parallel %q, in key order %q", found.found, one.sealFound)
			}
			// and what checkSeals, through bbolt, finds
			st, err := OpenReadOnly(path, testPairs)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var want []string
			if ce := new(CorruptError); errors.As(st.checkSeals(), &ce) {
				want = append([]string{ce.Problem}, ce.Check...)
			}
			if !slices.Equal(found.found, want) || len(want) != tc.seals {
				t.Fatalf("seals found: walk %q, checkSeals %q", found.found, want)
			}
		})
	}
}

// flipValue flips a bit in the middle of the first value of bucket's first
// leaf page.
func flipValue(t *testing.T, db []byte, bucket string) {
	t.Helper()
	leaves := leavesOf(db)
	if len(leaves[bucket]) == 0 {
		t.Fatalf("no leaf page of %s", bucket)
	}
	at := leaves[bucket][0] * pageSize
	e := db[at+16:]
	le := binary.LittleEndian
	pos, ksize, vsize := int(le.Uint32(e[4:])), int(le.Uint32(e[8:])), int(le.Uint32(e[12:]))
	db[at+16+pos+ksize+vsize/2] ^= 0x08
}
