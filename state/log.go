package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// The decision log keeps every audit row of every run. Entries are keyed by
// the run's start time and a sequence number, so a run's entries sit
// together in time order; a second bucket indexes them by contact within
// their run (log_index: start, contact, sequence), so one person's history
// is a prefix seek per run kept. A run's entries go to the end of both:
// a night's commit appends to the index, where an index keyed by contact
// first (log_contact, schema 7 and before) had it rewrite a page of its
// own per contact decided, scattered over the file like the records (a
// third of a night's commit). A run's id and its mappings are kept once
// per run (log_runs), not in every entry: at a million contacts the log is
// the larger part of the file, and each byte of an entry is 200 KB a
// night.
//
// A file from before log_index keeps log_contact (and every write keeps
// it) until the first run that opens it builds log_index from the log
// (BuildIndexes), in transactions of its own: killed half-way, the file
// still has log_contact, whole, and no mark that log_index is built; the
// next run builds it again. The transaction that marks it built drops
// log_contact.
//
// log_index's entries are packed in blocks (packed.go) in a bucket of their
// own, log_index_packed (marked index_log_packed, schema 10): a run's
// entries append to its last block instead of costing a bbolt key each.
// A file of schema 8 or 9 keeps log_index (one key per entry, marked
// index_log), read and written as it is, until the first run that opens
// it builds log_index_packed from the log the same way; the transaction
// that marks it built drops log_index and its mark. An older optsync
// refuses the file by its schema.
var (
	bucketLog        = []byte("log")
	bucketLogContact = []byte("log_contact")
	bucketLogIndex   = []byte("log_index")
	bucketLogPacked  = []byte("log_index_packed")
	bucketLogRuns    = []byte("log_runs")
	keyLogIndexOK    = []byte("index_log")
	keyLogPackedOK   = []byte("index_log_packed")
)

// logLayout is how a file indexes its log by contact.
type logLayout int

const (
	logByContact logLayout = iota // log_contact (schema 7 and before)
	logFlat                       // log_index, one key per entry (schema 8, 9)
	logPacked                     // log_index_packed
)

// layoutOfLog says how the file's log is indexed. Both marks (an older
// optsync's own build over the packed one) is log_index: the packed one
// is then not taken as built.
func (s *Store) layoutOfLog(tx *bolt.Tx) logLayout {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return logByContact
	}
	vm := s.vb(meta, "meta")
	switch {
	case vm.Get(keyLogIndexOK) != nil:
		return logFlat
	case vm.Get(keyLogPackedOK) != nil:
		return logPacked
	}
	return logByContact
}

// logIndexKey is an entry's key in log_index: the run's start (as in the
// log's key), the contact, the sequence number.
func logIndexKey(lk []byte, contact extract.ID) []byte {
	return appendLogIndexKey(make([]byte, 0, logIndexKeySize), lk, contact)
}

// appendLogIndexKey appends log_index's key of the entry keyed lk.
func appendLogIndexKey(dst, lk []byte, contact extract.ID) []byte {
	return append(append(append(dst, lk[:8]...), contact[:]...), lk[8:12]...)
}

// logIndexed says whether the file's log is indexed by log_index_packed
// (else it is built from the log by the first run that finds it not).
func (s *Store) logIndexed(tx *bolt.Tx) bool {
	return s.layoutOfLog(tx) == logPacked
}

// LogEntry is one decision as kept in state: an audit row.
type LogEntry struct {
	RunStarted       time.Time
	Seq              uint32
	RunID            string
	Contact          extract.ID
	PKey             string
	Pair             int // index into the run's mappings
	D365Field        string
	CampaignField    string
	Direction        string
	Old, New         string
	Rule             string
	D365Modified     int64 // Unix ms
	CampaignModified int64 // Unix ms
	Outcome          string
	Error            string
}

// logRun is what entries of one run share.
type logRun struct {
	ID    string           `json:"id"`
	Pairs []transform.Pair `json:"pairs"`
}

// Small vocabularies are stored as their index; an index of 0 means the
// text follows in full (a rule or outcome this table does not know).
var (
	logRules = []string{"", transform.RuleOnlyD365Changed, transform.RuleOnlyCampaignChanged,
		transform.RuleConflictD365Newer, transform.RuleConflictCampaignNewer, transform.RuleConflictTieOptout,
		transform.RuleAdobeCampaignNewer, transform.RuleAdobeOptoutWins, transform.RulePolicyOptoutWins,
		transform.RulePolicyD365Wins, transform.RulePolicyCampaignWins, transform.RuleSourceOfTruth}
	logOutcomes   = []string{"", "applied", "planned", "failed", "skipped", transform.OutcomePendingNotSeen}
	logDirections = []string{"", "d365->campaign", "campaign->d365"}
	logValues     = []string{"", "false", "true"}
)

func code(table []string, s string) byte {
	for i, t := range table {
		if i > 0 && t == s {
			return byte(i)
		}
	}
	return 0
}

func logKey(started time.Time, seq uint32) []byte {
	return appendLogKey(make([]byte, 0, logKeySize), started, seq)
}

// appendLogKey appends the log's key of a run's entry seq.
func appendLogKey(dst []byte, started time.Time, seq uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(dst, uint64(started.UnixNano())), seq)
}

func appendString(v []byte, s string) []byte {
	v = binary.AppendUvarint(v, uint64(len(s)))
	return append(v, s...)
}

// encode: contact(16) pair(1) direction(1) old<<4|new(1) outcome(1) rule(1)
// varint(D365Modified) varint(CampaignModified) PKey Error [rule] [outcome],
// the last two only when their code is 0.
func (e *LogEntry) encode() []byte {
	return e.appendTo(make([]byte, 0, 64+len(e.PKey)))
}

// appendTo appends the entry's encoding (encode) to v.
func (e *LogEntry) appendTo(v []byte) []byte {
	v = append(v, e.Contact[:]...)
	rule, outcome := code(logRules, e.Rule), code(logOutcomes, e.Outcome)
	v = append(v, byte(e.Pair), code(logDirections, e.Direction), code(logValues, e.Old)<<4|code(logValues, e.New), outcome, rule)
	v = binary.AppendVarint(v, e.D365Modified)
	v = binary.AppendVarint(v, e.CampaignModified)
	v = appendString(v, e.PKey)
	v = appendString(v, e.Error)
	if rule == 0 {
		v = appendString(v, e.Rule)
	}
	if outcome == 0 {
		v = appendString(v, e.Outcome)
	}
	return v
}

var errLogEntry = errors.New("decision log entry malformed")

func decodeLog(k, v []byte, runs map[int64]logRun) (LogEntry, error) {
	var e LogEntry
	if len(k) != 12 || len(v) < 21 {
		return e, errLogEntry
	}
	nanos := int64(binary.BigEndian.Uint64(k))
	e.RunStarted = time.Unix(0, nanos).UTC()
	e.Seq = binary.BigEndian.Uint32(k[8:])
	copy(e.Contact[:], v)
	e.Pair = int(v[16])
	dir, vals, outcome, rule := v[17], v[18], v[19], v[20]
	if int(dir) >= len(logDirections) || int(vals>>4) >= len(logValues) || int(vals&15) >= len(logValues) ||
		int(outcome) >= len(logOutcomes) || int(rule) >= len(logRules) {
		return e, errLogEntry
	}
	e.Direction, e.Old, e.New = logDirections[dir], logValues[vals>>4], logValues[vals&15]
	e.Outcome, e.Rule = logOutcomes[outcome], logRules[rule]
	v = v[21:]
	for _, dst := range []*int64{&e.D365Modified, &e.CampaignModified} {
		x, n := binary.Varint(v)
		if n <= 0 {
			return e, errLogEntry
		}
		*dst, v = x, v[n:]
	}
	strs := []*string{&e.PKey, &e.Error}
	if rule == 0 {
		strs = append(strs, &e.Rule)
	}
	if outcome == 0 {
		strs = append(strs, &e.Outcome)
	}
	for _, dst := range strs {
		l, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < l {
			return e, errLogEntry
		}
		*dst, v = string(v[n:n+int(l)]), v[n+int(l):]
	}
	if r, ok := runs[nanos]; ok {
		e.RunID = r.ID
		if e.Pair < len(r.Pairs) {
			e.D365Field, e.CampaignField = r.Pairs[e.Pair].D365, r.Pairs[e.Pair].Campaign
		}
	}
	return e, nil
}

// logBatch is a chunk of a run's decision-log entries, encoded and sealed
// as they were added (by the goroutine that decides, not the one that
// writes): entry i's key is keys[12i:12i+12], its sealed value
// vals[ends[i-1]:ends[i]], its log_index key idx[28i:28i+28] (not
// sealed: the packed index seals a block at a time).
type logBatch struct {
	keys, vals, idx []byte
	ends            []uint32
	// run names the run and mappings the entries belong to.
	run *logRun
}

const (
	logKeySize      = 12
	logIndexKeySize = 8 + 16 + 4
)

func (l *logBatch) add(e *LogEntry) {
	at := len(l.keys)
	l.keys = appendLogKey(l.keys, e.RunStarted, e.Seq)
	k := l.keys[at:]
	start := len(l.vals)
	l.vals = appendSeal(e.appendTo(l.vals), start, k)
	l.ends = append(l.ends, uint32(len(l.vals)))
	l.idx = appendLogIndexKey(l.idx, k, e.Contact)
}

func (l *logBatch) len() int { return len(l.ends) }

func (l *logBatch) reset() {
	l.keys, l.vals, l.idx, l.ends = l.keys[:0], l.vals[:0], l.idx[:0], l.ends[:0]
}

// putLog writes a chunk of a run's entries, and the run's shared part; sc,
// when set, is the memory it works in (nil: its own).
func (s *Store) putLog(tx *bolt.Tx, l *logBatch, sc *packScratch) error {
	n := l.len()
	if n == 0 {
		return nil
	}
	lb, err := tx.CreateBucketIfNotExists(bucketLog)
	if err != nil {
		return err
	}
	layout := s.layoutOfLog(tx)
	name := map[logLayout][]byte{logByContact: bucketLogContact, logFlat: bucketLogIndex, logPacked: bucketLogPacked}[layout]
	ib, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	rb, err := tx.CreateBucketIfNotExists(bucketLogRuns)
	if err != nil {
		return err
	}
	if l.run != nil {
		v, err := json.Marshal(l.run)
		if err != nil {
			return err
		}
		if err := s.vb(rb, "log_runs").Put(l.keys[:8], v); err != nil {
			return err
		}
	}
	lb.FillPercent = 1 // always appended at the end: time only grows
	lv := s.vb(lb, "log")
	for i := range n {
		from := uint32(0)
		if i > 0 {
			from = l.ends[i-1]
		}
		if err := lv.PutSealed(l.keys[i*logKeySize:(i+1)*logKeySize], l.vals[from:l.ends[i]]); err != nil {
			return err
		}
	}
	if layout == logByContact {
		iv := s.vb(ib, "log_contact")
		for i := range n {
			k := l.keys[i*logKeySize : (i+1)*logKeySize]
			// an index entry holds no value, only its seal: the key is checked
			if err := iv.Put(append(slices.Clone(l.contact(i)), k...), nil); err != nil {
				return err
			}
		}
		return nil
	}
	// A run's chunks come in contact order: its entries go to the end, in
	// the order they came (sorted only when they did not).
	ib.FillPercent = 1
	iv := s.vb(ib, string(name))
	if sc == nil {
		sc = &packScratch{}
	}
	order := sc.order[:0]
	for i := range n {
		order = append(order, i)
	}
	sc.order = order
	key := func(i int) []byte { return l.idx[i*logIndexKeySize : (i+1)*logIndexKeySize] }
	byKey := func(a, b int) int { return bytes.Compare(key(a), key(b)) }
	if !slices.IsSortedFunc(order, byKey) {
		slices.SortFunc(order, byKey)
	}
	if layout == logPacked {
		ops := sc.ops[:0]
		for _, i := range order {
			ops = append(ops, blockOp{k: key(i), put: true})
		}
		sc.ops = ops
		return packed{x: iv, sc: sc}.apply(ops)
	}
	for _, i := range order {
		// an index entry holds no value, only its seal: the key is checked
		if err := iv.Put(key(i), nil); err != nil {
			return err
		}
	}
	return nil
}

// contact is entry i's contact (its value's first 16 bytes).
func (l *logBatch) contact(i int) []byte {
	from := uint32(0)
	if i > 0 {
		from = l.ends[i-1]
	}
	return l.vals[from : from+16]
}

func (s *Store) loadLogRuns(tx *bolt.Tx) (map[int64]logRun, error) {
	runs := map[int64]logRun{}
	rb := tx.Bucket(bucketLogRuns)
	if rb == nil {
		return runs, nil
	}
	err := s.vb(rb, "log_runs").ForEach(func(k, v []byte) error {
		var r logRun
		if len(k) != 8 || json.Unmarshal(v, &r) != nil {
			return errLogEntry
		}
		runs[int64(binary.BigEndian.Uint64(k))] = r
		return nil
	})
	return runs, err
}

// LogQuery selects decision-log entries; zero fields select everything.
type LogQuery struct {
	Contact *extract.ID
	RunID   string
	Since   time.Time
	Field   string // a Dynamics or Campaign field name
}

// QueryLog calls fn for each matching entry, oldest first.
func (s *Store) QueryLog(q LogQuery, fn func(*LogEntry) error) error {
	return s.view(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bucketLog)
		if lb == nil {
			return nil
		}
		runs, err := s.loadLogRuns(tx)
		if err != nil {
			return fmt.Errorf("state %s: %w", s.path, err)
		}
		lv := s.vb(lb, "log")
		match := func(k, v []byte) error {
			e, err := decodeLog(k, v, runs)
			if err != nil {
				return fmt.Errorf("state %s: %w", s.path, err)
			}
			if (q.RunID != "" && e.RunID != q.RunID) || (!q.Since.IsZero() && e.RunStarted.Before(q.Since)) ||
				(q.Field != "" && e.D365Field != q.Field && e.CampaignField != q.Field) ||
				(q.Contact != nil && e.Contact != *q.Contact) {
				return nil
			}
			return fn(&e)
		}
		if q.Contact != nil {
			switch s.layoutOfLog(tx) {
			case logPacked:
				ib := tx.Bucket(bucketLogPacked)
				if ib == nil {
					return nil
				}
				return s.contactLog(s.packed(ib, "log_index_packed").Cursor(), *q.Contact, q.Since, lv, match)
			case logFlat:
				ib := tx.Bucket(bucketLogIndex)
				if ib == nil {
					return nil
				}
				return s.contactLog(s.vb(ib, "log_index").Cursor(), *q.Contact, q.Since, lv, match)
			}
		}
		if q.Contact != nil {
			ib := tx.Bucket(bucketLogContact)
			if ib == nil {
				return nil
			}
			c := s.vb(ib, "log_contact").Cursor()
			prefix := q.Contact[:]
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				lk := k[16:]
				if err := match(lk, lv.Get(lk)); err != nil {
					return err
				}
			}
			return nil
		}
		from := []byte{}
		if !q.Since.IsZero() {
			from = logKey(q.Since, 0)
		}
		if q.RunID != "" {
			if started, ok := s.runStarted(tx, q.RunID); ok {
				from = logKey(started, 0)
			} else {
				return nil
			}
		}
		c := lv.Cursor()
		for k, v := c.Seek(from); k != nil; k, v = c.Next() {
			if q.RunID != "" && !bytes.Equal(k[:8], from[:8]) {
				break
			}
			if err := match(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// contactLog hands match the entries of one contact, oldest first: in each
// run kept (from since on), the contact's keys of the log's index (c), one
// seek apart; a seek past them lands on the next run.
func (s *Store) contactLog(c entryCursor, contact extract.ID, since time.Time, lv vbucket, match func(k, v []byte) error) error {
	from := []byte{}
	if !since.IsZero() {
		from = logKey(since, 0)[:8]
	}
	k, _ := c.Seek(from)
	for k != nil {
		if len(k) != 28 {
			return &CorruptError{Path: s.path, Problem: fmt.Sprintf("the decision log's index holds a key %x of the wrong length", k)}
		}
		prefix := append(slices.Clone(k[:8]), contact[:]...)
		for k, _ = c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			lk := append(slices.Clone(k[:8]), k[24:]...)
			if err := match(lk, lv.Get(lk)); err != nil {
				return err
			}
		}
		if k == nil || !bytes.Equal(k[:8], prefix[:8]) {
			continue // k is the next run's first key, or there is none
		}
		// past the contact within the run: on to the next run
		next := binary.BigEndian.Uint64(prefix[:8]) + 1
		if next == 0 {
			return nil
		}
		k, _ = c.Seek(binary.BigEndian.AppendUint64(nil, next))
	}
	return nil
}

// pruneLog deletes entries of runs started before cutoff.
func (s *Store) pruneLog(tx *bolt.Tx, cutoff time.Time) (int, error) {
	layout := s.layoutOfLog(tx)
	lb, ib := tx.Bucket(bucketLog), tx.Bucket(bucketLogContact)
	switch layout {
	case logFlat:
		ib = tx.Bucket(bucketLogIndex)
	case logPacked:
		ib = tx.Bucket(bucketLogPacked)
	}
	if lb == nil || ib == nil {
		return 0, nil
	}
	end := logKey(cutoff, 0)
	var doomed [][]byte
	c := s.vb(lb, "log").Cursor()
	for k, v := c.First(); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
		if len(v) < 16 {
			continue
		}
		doomed = append(doomed, append(append([]byte{}, v[:16]...), k...))
	}
	var ops []blockOp
	for _, ik := range doomed {
		if err := lb.Delete(ik[16:]); err != nil {
			return 0, err
		}
		if layout != logByContact {
			var contact extract.ID
			copy(contact[:], ik)
			ik = logIndexKey(ik[16:], contact)
		}
		if layout == logPacked {
			ops = append(ops, blockOp{k: ik})
			continue
		}
		if err := ib.Delete(ik); err != nil {
			return 0, err
		}
	}
	if len(ops) > 0 {
		// by run, then contact: a block is read and rewritten once
		slices.SortFunc(ops, func(a, b blockOp) int { return bytes.Compare(a.k, b.k) })
		if err := s.packed(ib, "log_index_packed").apply(ops); err != nil {
			return 0, err
		}
	}
	if rb := tx.Bucket(bucketLogRuns); rb != nil {
		var old [][]byte
		c := s.vb(rb, "log_runs").Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k, end[:8]) < 0; k, _ = c.Next() {
			old = append(old, append([]byte{}, k...))
		}
		for _, k := range old {
			if err := rb.Delete(k); err != nil {
				return 0, err
			}
		}
	}
	return len(doomed), nil
}

// LogPairs lists the mappings the decision log has entries of, so that a
// mapping removed since can still be asked about.
func (s *Store) LogPairs() ([]transform.Pair, error) {
	var pairs []transform.Pair
	err := s.view(func(tx *bolt.Tx) error {
		runs, err := s.loadLogRuns(tx)
		if err != nil {
			return err
		}
		for _, r := range runs {
			for _, p := range r.Pairs {
				if !slices.Contains(pairs, p) {
					pairs = append(pairs, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: decision log: %w", s.path, err)
	}
	return pairs, nil
}
