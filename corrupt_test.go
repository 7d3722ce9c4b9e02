package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
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
// harms nothing), by bucket (the top-level bucket a page belongs to; ""
// for the root's own pages), by bbolt's page layout: a 16-byte header (id,
// flags, count, overflow), then 16-byte elements — a branch's (pos, ksize,
// child page), a leaf's (flags, pos, ksize, vsize; flags 1: a bucket, whose
// value starts with its root page, 0 for an inline bucket).
func reachable(db []byte) (branches, leaves map[string][]int) {
	branches, leaves = map[string][]int{}, map[string][]int{}
	le := binary.LittleEndian
	m := db[16 : 16+64]
	if m1 := db[pageSize+16 : pageSize+16+64]; le.Uint64(m1[48:]) > le.Uint64(m[48:]) {
		m = m1
	}
	var walk func(id uint64, bucket string)
	walk = func(id uint64, bucket string) {
		at := int(id) * pageSize
		page := db[at:]
		count := int(le.Uint16(page[10:]))
		switch le.Uint16(page[8:]) {
		case 0x01:
			branches[bucket] = append(branches[bucket], int(id))
			for i := range count {
				walk(le.Uint64(page[16+i*16+8:]), bucket)
			}
		case 0x02:
			leaves[bucket] = append(leaves[bucket], int(id))
			for i := range count {
				e := page[16+i*16:]
				if le.Uint32(e) == 1 {
					k := e[le.Uint32(e[4:]):]
					v := e[le.Uint32(e[4:])+le.Uint32(e[8:]):]
					if root := le.Uint64(v); root != 0 {
						name := bucket
						if name == "" {
							name = string(k[:le.Uint32(e[8:])])
						}
						walk(root, name)
					}
				}
			}
		}
	}
	walk(le.Uint64(m[16:]), "") // the root bucket's page
	return branches, leaves
}

// Each kind of damage the fault runs made gives exit 1 with a message that
// names the file and the way back, and never a crash, a silent use of the
// damage, or a command that writes over it.
//
// Commands check what they reach, not the whole file (a night over ten
// million contacts must not walk every page): the shape of the file (size,
// meta pages, free list) at every open; every page a command reaches, with
// its records' seals, before it is used; and a backfill, which reads
// everything, walks every page and checks every seal before it uses
// anything. So, for every damage: a reader answers exactly as from the good
// file or stops; a backfill stops and leaves the file as it was found; a
// run stops when the damage lies in what it reaches (here: every contact,
// the run history, the files and meta records), and when it does not (an
// old decision-log entry), it finishes without having used or written over
// it — a backfill after it still stops, naming the same damage. A meta page
// torn by a commit that did not finish (a power loss) is no damage: bbolt
// falls back to the last committed transaction, which the record beside
// the state file names; the newer meta page damaged, or a meta page
// damaged without that record, is.
func TestDamagedStateStopsEveryCommand(t *testing.T) {
	p, good := corruptProject(t)
	mark, err := os.ReadFile(p.path("optsync.db.committed"))
	if err != nil {
		t.Fatalf("no record of the last commit beside the state file: %v", err)
	}
	branches, leaves := reachable(good)
	if len(leaves["contacts"]) < 10 || len(branches["contacts"]) < 1 || len(leaves["log"]) < 3 {
		t.Fatalf("the state is too small to damage meaningfully: %v leaves, %v branches", leaves, branches)
	}
	flip := func(at int, mask byte) func([]byte) []byte {
		return func(b []byte) []byte { b[at] ^= mask; return b }
	}
	// The meta page of the last commit, and the one the next commit writes.
	newer, older := 0, 1
	if binary.LittleEndian.Uint64(good[pageSize+16+48:]) > binary.LittleEndian.Uint64(good[16+48:]) {
		newer, older = 1, 0
	}
	// A meta page torn by a commit that did not finish: the next commit
	// writes its meta page where the older one is, its first half
	// written, the rest still the old bytes.
	tear := func(b []byte) []byte {
		m := b[older*pageSize+16 : older*pageSize+16+64]
		copy(m[:32], b[newer*pageSize+16:newer*pageSize+16+32])
		binary.LittleEndian.PutUint64(m[16:], binary.LittleEndian.Uint64(m[16:])+7) // its new root
		return b
	}
	cases := []struct {
		name   string
		damage func([]byte) []byte
		says   string // "": no damage, every command works as on the good file
		// runMay: a run over the same inputs does not reach the damage,
		// and may finish
		runMay bool
		noMark bool // the record of the last commit is gone
	}{
		{name: "truncated to 0 bytes", damage: func(b []byte) []byte { return b[:0] }, says: "it is empty"},
		{name: "truncated to 8 KiB", damage: func(b []byte) []byte { return b[:8<<10] }, says: "truncated"},
		{name: "truncated to 16 KiB", damage: func(b []byte) []byte { return b[:16<<10] }, says: "truncated"},
		{name: "truncated to half its pages", damage: func(b []byte) []byte { return b[:highWater(b)/2*pageSize] }, says: "truncated"},
		{name: "cut inside a page", damage: func(b []byte) []byte { return b[:len(b)-100] }, says: "not a whole number"},
		{name: "the newer meta page damaged", damage: flip(newer*pageSize+16+50, 0x04), says: fmt.Sprintf("meta page %d is damaged", newer)},
		{name: "the older meta page damaged without the record of the last commit", damage: flip(older*pageSize+16+50, 0x04),
			says: fmt.Sprintf("meta page %d is damaged", older), noMark: true},
		{name: "the older meta page damaged: nothing committed is lost", damage: flip(older*pageSize+16+50, 0x04)},
		{name: "a meta page torn by a commit that did not finish", damage: tear},
		// A backfill's open checks the seals as it walks the pages, or
		// (a walk that does not start from a torn page 0) through bbolt.
		{name: "a meta page torn, and a bit of a run record", damage: func(b []byte) []byte {
			return flipIn(t, good, "runs", 1, "backfill")(tear(b))
		}, says: "does not match its checksum"},
		{name: "both meta pages damaged", damage: func(b []byte) []byte { b[16] ^= 1; b[pageSize+16] ^= 1; return b }, says: "neither of its two meta pages"},
		{name: "a meta page written back from an older transaction", damage: func(b []byte) []byte {
			// the older meta page made to claim transaction 2 less than it
			// holds, checksum and all (page 0 whatever its parity, as this
			// case did, passed only while the last commit's transaction was
			// odd: the newer page written back two transactions is a pair
			// the shape alone cannot tell from a file one commit older)
			m := b[older*pageSize+16 : older*pageSize+16+64]
			binary.LittleEndian.PutUint64(m[48:], binary.LittleEndian.Uint64(m[48:])-2)
			binary.LittleEndian.PutUint64(m[56:], fnv64a(m[:56]))
			return b
		}, says: "not two consecutive ones"},
		{name: "the newer meta page written back from two transactions before", damage: func(b []byte) []byte {
			// Both pages check and hold consecutive transactions, the
			// newer one now the older page's: only the record of the last
			// commit beside the file tells that a transaction is lost.
			m := b[newer*pageSize+16 : newer*pageSize+16+64]
			binary.LittleEndian.PutUint64(m[48:], binary.LittleEndian.Uint64(m[48:])-2)
			binary.LittleEndian.PutUint64(m[56:], fnv64a(m[:56]))
			return b
		}, says: "replaced by an older copy of itself"},
		{name: "a contacts leaf page's header", damage: flip(leaves["contacts"][len(leaves["contacts"])/2]*pageSize+8, 0x07), says: "damaged"},
		{name: "a contacts branch page's header", damage: flip(branches["contacts"][0]*pageSize+8, 0x03), says: "damaged"},
		{name: "a contacts leaf page's element count", damage: flip(leaves["contacts"][1]*pageSize+10, 0x40), says: "damaged"},
		{name: "a decision-log leaf page's element count", damage: flip(leaves["log"][1]*pageSize+10, 0x01), says: "damaged", runMay: true},
		// A single bit of a stored record, as the fault runs flipped them:
		// in a contact's PKey, in a contact key, in a decision-log entry.
		// (records are packed in blocks: contact 3's is in the first)
		{name: "a bit of a contact's PKey", damage: flipIn(t, good, "contacts", 1, "@p3"), says: "does not match its checksum"},
		{name: "a bit of a contact key", damage: flipIn(t, good, "contacts", 5, ""), says: "is damaged"},
		{name: "a bit of a decision-log entry", damage: flipIn(t, good, "log", 2, "@p"), says: "does not match its checksum", runMay: true},
		{name: "a bit of a run record", damage: flipIn(t, good, "runs", 1, "backfill"), says: "does not match its checksum"},
	}
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
			os.Remove(p.path("optsync.db.committed"))
			if !tc.noMark {
				testkit.WriteFile(t, p.path("optsync.db.committed"), string(mark))
			}
			command := func(cmd ...string) (int, string, string) {
				code, stdout, stderr, signaled := helperProcess(t, "plain", append([]string{"--log-format", "console", "--config", p.config}, cmd...)...)
				if signaled || strings.Contains(stderr, "panic") || strings.Contains(stderr, "fatal error") || strings.Contains(stderr, "goroutine ") {
					t.Fatalf("%s crashed: exit %d (signaled %v)\n%s", cmd, code, signaled, stderr)
				}
				return code, stdout, stderr
			}
			stops := func(cmd []string, code int, stdout, stderr string) {
				t.Helper()
				if code != exitFailure {
					t.Fatalf("%s: exit %d, want 1 with a message\nstdout %s\nstderr %s", cmd, code, stdout, stderr)
				}
				if !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, filepath.Base(p.path("optsync.db"))) ||
					!strings.Contains(stderr, "restore the file from a backup") {
					t.Fatalf("%s: the message does not say %q, name the file and the way back:\n%s", cmd, tc.says, stderr)
				}
			}
			for _, cmd := range readers {
				code, stdout, stderr := command(cmd...)
				if code == 0 || tc.says == "" {
					// plan's output names a new run; the others must be the same
					if code != 0 || cmd[0] != "plan" && stdout != ref[strings.Join(cmd, " ")] {
						t.Fatalf("%s answered from the damaged file with something else than from the good one: exit %d\n%s%s", cmd, code, stdout, stderr)
					}
					continue
				}
				stops(cmd, code, stdout, stderr)
			}
			if now, _ := os.ReadFile(p.path("optsync.db")); string(now) != string(db) {
				t.Fatalf("a reader changed the state file")
			}
			if tc.says == "" {
				for _, cmd := range [][]string{{"backfill"}, {"run"}} {
					if code, stdout, stderr := command(cmd...); code != 0 {
						t.Fatalf("%s: exit %d, want 0: no committed transaction is lost\n%s%s", cmd, code, stdout, stderr)
					}
				}
				return
			}
			// A backfill checks every page and record before it uses or
			// writes anything: the damaged file is left as it was found,
			// for whoever restores it.
			code, stdout, stderr := command("backfill")
			stops([]string{"backfill"}, code, stdout, stderr)
			if now, _ := os.ReadFile(p.path("optsync.db")); string(now) != string(db) {
				t.Fatalf("the backfill changed the damaged state file")
			}
			code, stdout, stderr = command("run")
			if code != 0 || !tc.runMay {
				stops([]string{"run"}, code, stdout, stderr)
			}
			// Whatever the run did, the damage is still there to be found,
			// neither used nor written over.
			code, stdout, stderr = command("backfill")
			stops([]string{"backfill after the run"}, code, stdout, stderr)
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
	for _, id := range leaves[bucket] {
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
