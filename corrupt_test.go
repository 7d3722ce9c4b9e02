package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// corruptProject is a real state file after two backfills of 3,000
// contacts (many pages of snapshots, a decision log, a run history), kept
// aside to be damaged in copies.
func corruptProject(t *testing.T) (p *project, good []byte) {
	t.Helper()
	p = newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	var cs, ps []string
	for i := 1; i <= 3000; i++ {
		id := testkit.GUID(i)
		cs = append(cs, fmt.Sprintf("%s,2026-11-20T10:00:00Z,%v", id, i%3 == 0))
		ps = append(ps, fmt.Sprintf("@p%d,%s,2026-11-20 09:00:00.000Z,%v", i, id, i%4 == 0))
	}
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(cs...))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(ps...))
	for range 2 {
		if r := p.backfill(t); r.code != 0 {
			t.Fatalf("backfill: exit %d %s", r.code, r.stderr)
		}
	}
	good, err := os.ReadFile(p.path("optsync.db"))
	if err != nil {
		t.Fatal(err)
	}
	return p, good
}

const pageSize = 4096

// reachable returns the branch and leaf pages of a state file that its
// newest meta page reaches (freed pages hold stale copies: damage there
// harms nothing), by bbolt's page layout: a 16-byte header (id, flags,
// count, overflow), then 16-byte elements — a branch's (pos, ksize, child
// page), a leaf's (flags, pos, ksize, vsize; flags 1: a bucket, whose value
// starts with its root page, 0 for an inline bucket).
func reachable(db []byte) (branches, leaves []int) {
	le := binary.LittleEndian
	m := db[16 : 16+64]
	if m1 := db[pageSize+16 : pageSize+16+64]; le.Uint64(m1[48:]) > le.Uint64(m[48:]) {
		m = m1
	}
	var walk func(id uint64)
	walk = func(id uint64) {
		at := int(id) * pageSize
		page := db[at:]
		count := int(le.Uint16(page[10:]))
		switch le.Uint16(page[8:]) {
		case 0x01:
			branches = append(branches, int(id))
			for i := range count {
				walk(le.Uint64(page[16+i*16+8:]))
			}
		case 0x02:
			leaves = append(leaves, int(id))
			for i := range count {
				e := page[16+i*16:]
				if le.Uint32(e) == 1 {
					v := e[le.Uint32(e[4:])+le.Uint32(e[8:]):]
					if root := le.Uint64(v); root != 0 {
						walk(root)
					}
				}
			}
		}
	}
	walk(le.Uint64(m[16:])) // the root bucket's page
	return branches, leaves
}

// Each kind of damage the fault runs made gives exit 1 with a message that
// names the file and the way back, from every command, and never a crash
// or a run that goes on with the damaged state.
func TestDamagedStateStopsEveryCommand(t *testing.T) {
	p, good := corruptProject(t)
	branches, leaves := reachable(good)
	if len(leaves) < 10 || len(branches) < 1 {
		t.Fatalf("the state is too small to damage meaningfully: %d leaves, %d branches", len(leaves), len(branches))
	}
	flip := func(at int, mask byte) func([]byte) []byte {
		return func(b []byte) []byte { b[at] ^= mask; return b }
	}
	cases := []struct {
		name   string
		damage func([]byte) []byte
		says   string
	}{
		{"truncated to 0 bytes", func(b []byte) []byte { return b[:0] }, "it is empty"},
		{"truncated to 8 KiB", func(b []byte) []byte { return b[:8<<10] }, "truncated"},
		{"truncated to 16 KiB", func(b []byte) []byte { return b[:16<<10] }, "truncated"},
		{"truncated to half its pages", func(b []byte) []byte { return b[:highWater(b)/2*pageSize] }, "truncated"},
		{"cut inside a page", func(b []byte) []byte { return b[:len(b)-100] }, "not a whole number"},
		{"meta page 0 damaged", flip(16+50, 0x04), "meta page 0 is damaged"},
		{"meta page 1 damaged", flip(pageSize+16+50, 0x04), "meta page 1 is damaged"},
		{"both meta pages damaged", func(b []byte) []byte { b[16] ^= 1; b[pageSize+16] ^= 1; return b }, "neither of its two meta pages"},
		{"a meta page written back from an older transaction", func(b []byte) []byte {
			// page 0 made to claim transaction 2 less than it holds, checksum and all
			m := b[16 : 16+64]
			binary.LittleEndian.PutUint64(m[48:], binary.LittleEndian.Uint64(m[48:])-2)
			binary.LittleEndian.PutUint64(m[56:], fnv64a(m[:56]))
			return b
		}, "not two consecutive ones"},
		{"a leaf page's header", flip(leaves[len(leaves)/2]*pageSize+8, 0x07), "damaged"},
		{"a branch page's header", flip(branches[0]*pageSize+8, 0x03), "damaged"},
		{"a leaf page's element count", flip(leaves[1]*pageSize+10, 0x40), "damaged"},
		// A single bit of a stored record, as the fault runs flipped them:
		// in a contact's PKey, in a contact key, in a decision-log entry.
		{"a bit of a contact's PKey", flipIn(t, good, "contacts", 3, "@p3"), "does not match its checksum"},
		{"a bit of a contact key", flipIn(t, good, "contacts", 5, ""), "is damaged"},
		{"a bit of a decision-log entry", flipIn(t, good, "log", 2, "@p"), "does not match its checksum"},
		{"a bit of a run record", flipIn(t, good, "runs", 1, "backfill"), "does not match its checksum"},
	}
	writers := [][]string{{"backfill"}, {"run"}}
	readers := [][]string{{"runs", "--format", "json"}, {"audit", "--contact", "00000000-0000-0000-0000-000000000003", "--format", "json"},
		{"state", "export"}, {"plan", "--backfill"}}
	// What the readers answer from the good file: one that answers from a
	// damaged file must answer the same (it read nothing damaged), or stop.
	ref := map[string]string{}
	for _, cmd := range readers {
		code, stdout, stderr, _ := helperProcess(t, "plain", append([]string{"--log-format", "console", "--config", p.config}, cmd...)...)
		if code != 0 {
			t.Fatalf("%s on the good file: exit %d\n%s", cmd, code, stderr)
		}
		ref[strings.Join(cmd, " ")] = stdout
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := tc.damage(append([]byte(nil), good...))
			if err := os.WriteFile(p.path("optsync.db"), db, 0o600); err != nil {
				t.Fatal(err)
			}
			stopped := 0
			for _, cmd := range append(slices.Clone(writers), readers...) {
				code, stdout, stderr, signaled := helperProcess(t, "plain", append([]string{"--log-format", "console", "--config", p.config}, cmd...)...)
				if signaled || strings.Contains(stderr, "panic") || strings.Contains(stderr, "fatal error") || strings.Contains(stderr, "goroutine ") {
					t.Fatalf("%s crashed: exit %d (signaled %v)\n%s", cmd, code, signaled, stderr)
				}
				if code == 0 && slices.ContainsFunc(readers, func(r []string) bool { return slices.Equal(r, cmd) }) {
					// plan's output names a new run; the others must be the same
					if cmd[0] != "plan" && stdout != ref[strings.Join(cmd, " ")] {
						t.Fatalf("%s answered from the damaged file with something else than from the good one:\n%s", cmd, stdout)
					}
					continue
				}
				if code != exitFailure {
					t.Fatalf("%s: exit %d, want 1 with a message\nstdout %s\nstderr %s", cmd, code, stdout, stderr)
				}
				if !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, filepath.Base(p.path("optsync.db"))) ||
					!strings.Contains(stderr, "restore the file from a backup") {
					t.Fatalf("%s: the message does not say %q, name the file and the way back:\n%s", cmd, tc.says, stderr)
				}
				stopped++
			}
			if stopped < len(writers) {
				t.Fatalf("only %d commands stopped", stopped)
			}
			// The damaged file is left as it was found, for whoever restores it.
			if now, _ := os.ReadFile(p.path("optsync.db")); string(now) != string(db) {
				t.Fatalf("the damaged state file was changed")
			}
		})
	}
}

func fnv64a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// flipIn returns a damage that flips one bit of the n-th record of a
// bucket, found by its key and value side by side in a leaf page: in the
// value, where it holds marker (or in the middle), or in the key when
// marker is "".
func flipIn(t *testing.T, good []byte, bucket string, n int, marker string) func([]byte) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe.db")
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var kv []byte
	var klen int
	if err := db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucket)).Cursor()
		k, v := c.First()
		for range n - 1 {
			k, v = c.Next()
		}
		kv, klen = append(append([]byte{}, k...), v...), len(k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// In the page that holds it now: freed pages keep stale copies.
	at := -1
	_, leaves := reachable(good)
	for _, id := range leaves {
		page := good[id*pageSize : (id+1)*pageSize]
		if i := bytes.Index(page, kv); i >= 0 {
			at = id*pageSize + i
			break
		}
	}
	if at < 0 {
		t.Fatalf("record %d of %s is in no leaf page", n, bucket)
	}
	switch {
	case marker == "":
		at += klen / 2
	case bytes.Contains(kv[klen:], []byte(marker)):
		at += klen + bytes.Index(kv[klen:], []byte(marker)) + len(marker) - 1
	default:
		t.Fatalf("record %d of %s does not hold %q", n, bucket, marker)
	}
	return func(b []byte) []byte { b[at] ^= 0x02; return b }
}

// highWater is the number of pages the newer meta page says the file uses.
func highWater(db []byte) int {
	m0, m1 := db[16:16+64], db[pageSize+16:pageSize+16+64]
	if binary.LittleEndian.Uint64(m1[48:]) > binary.LittleEndian.Uint64(m0[48:]) {
		m0 = m1
	}
	return int(binary.LittleEndian.Uint64(m0[40:]))
}
