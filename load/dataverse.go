package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/apiclient"
)

// DataverseWrite is one contact's fields to PATCH, in their own polarity.
type DataverseWrite struct {
	ID extract.ID
	// ETag is the contact's ETag as read for the decision, sent back
	// exactly as read in If-Match. "" when the contact was not read through
	// the API (a CSV source, the retry queue without a stored ETag): the
	// writer then reads the contact first (see Apply).
	ETag   string
	Fields []string
	Values []bool
	// What the decision was based on: the record's modifiedon (Unix ms)
	// and the values of Fields as read, in their own polarity.
	Modified int64
	Was      []extract.Tri
}

// WriteResult is how one write went.
type WriteResult struct {
	Status  int    // the write's own HTTP status; 0 when it never got one
	Code    string // the service's error code
	Message string
	Err     error // transport failure, the batch as a whole failing, a guard refusing
	// ReadBack says the service's answer was lost or unreadable and the
	// outcome was settled by reading the record back.
	ReadBack bool
}

// OK reports a write the service applied.
func (r WriteResult) OK() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

// Error describes a failed write for the audit file.
func (r WriteResult) Error() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	return extract.StatusText(r.Status, r.Code, r.Message)
}

// ErrContactMoved marks a write not sent because the contact changed in
// Dynamics since it was read: the contact is decided again next run.
var ErrContactMoved = errors.New("the contact changed in Dynamics after it was read; not overwritten")

// unknownOutcome is a write sent whose answer never came or could not be
// read: it may or may not have been applied.
type unknownOutcome struct{ err error }

func (u *unknownOutcome) Error() string { return "outcome unknown: " + u.err.Error() }
func (u *unknownOutcome) Unwrap() error { return u.err }

func unknown(err error) WriteResult { return WriteResult{Err: &unknownOutcome{err}} }

func isUnknown(r WriteResult) bool {
	var u *unknownOutcome
	return errors.As(r.Err, &u)
}

// DataverseReader reads contacts as the service holds them now
// (extract.Dataverse).
type DataverseReader interface {
	Current(ctx context.Context, ids []extract.ID) (map[extract.ID]extract.Current, error)
}

// sendRounds bounds how often writes whose outcome was unknown, and that
// reading back showed not applied, are sent again in one run.
const sendRounds = 3

// DataverseWriter applies writes through $batch: one change set per
// contact, so a contact's fields change together, and
// Prefer: odata.continue-on-error, so one refused contact does not stop
// the others. It speaks the standard's format, which Dataverse reads too:
// request URLs relative to the service root, Accept: multipart/mixed, and
// it reads an OData JSON batch answer should a server send one anyway.
type DataverseWriter struct {
	Client  *http.Client
	Reader  DataverseReader
	BaseURL string
	// BatchSize is the requests per batch, at most 1000; a 413 halves it
	// for the rest of the writer's life (one run).
	BatchSize int
	// Concurrency is the batches in flight; lowered to the server's
	// x-ms-dop-hint, and halved on each throttling answer.
	Concurrency int
	Log         zerolog.Logger
	// ReadBackTimeout bounds the read-back of writes whose answer a signal
	// cut off (default 1m): the run is stopping, but not blind.
	ReadBackTimeout time.Duration

	once    sync.Once
	size    atomic.Int64
	gate    *gate
	noETags atomic.Bool
}

func (w *DataverseWriter) init() {
	w.once.Do(func() {
		w.size.Store(int64(min(max(w.BatchSize, 1), 1000)))
		w.gate = newGate(max(w.Concurrency, 1))
	})
}

// Throttled slows the writer down after the service answered 429: half as
// many batches in flight (at least one) for the rest of the run.
func (w *DataverseWriter) Throttled() {
	w.init()
	if from, to := w.gate.halve(); to < from {
		w.Log.Warn().Int("from", from).Int("to", to).Msg("the service is throttling: fewer $batch requests in flight for the rest of this run")
	}
}

// Apply sends every write and returns one result per write, in order.
//
// A write without an ETag is sent only after the contact is read (in
// bulk) and still holds what the decision was based on — then with the
// ETag just read; a contact that moved is not written (ErrContactMoved).
// A write whose outcome is unknown — the connection lost after sending, an
// answer that does not parse, a 5xx — is settled by reading the contact
// back: applied if it holds the written values, sent again (with the ETag
// read) if it still holds what it held, refused if someone else changed it.
func (w *DataverseWriter) Apply(ctx context.Context, writes []DataverseWrite) []WriteResult {
	w.init()
	results := make([]WriteResult, len(writes))
	done := make([]bool, len(writes))
	var blind []int
	for i := range writes {
		switch {
		case strings.ContainsAny(writes[i].ETag, "\r\n"):
			// sent back as read, it would break the request apart
			results[i], done[i] = WriteResult{Err: fmt.Errorf("not sent: the ETag the service sent (%q) cannot go back in a header", writes[i].ETag)}, true
		case writes[i].ETag == "":
			blind = append(blind, i)
		}
	}
	if len(blind) > 0 {
		w.guard(ctx, writes, blind, results, done)
	}
	var todo []int
	for i := range writes {
		if !done[i] {
			todo = append(todo, i)
		}
	}
	for round := 1; len(todo) > 0; round++ {
		w.send(ctx, writes, todo, results)
		var lost []int
		for _, i := range todo {
			if isUnknown(results[i]) {
				lost = append(lost, i)
			}
		}
		if len(lost) == 0 {
			break
		}
		todo = w.settle(ctx, writes, lost, results, round < sendRounds && ctx.Err() == nil)
	}
	return results
}

// holds reports whether c shows every value of wr.
func holds(c extract.Current, wr *DataverseWrite) bool {
	for k, f := range wr.Fields {
		if c.Values[f] != extract.Of(wr.Values[k]) {
			return false
		}
	}
	return true
}

// unmoved reports whether c is still the record the decision was based on.
// A change time not known on either side (unreadable, or forgotten for
// lying in the future) shows nothing: two unknown times are not one time.
func unmoved(c extract.Current, wr *DataverseWrite) bool {
	if c.Modified == extract.NoTime || c.Modified != wr.Modified {
		return false
	}
	for k, f := range wr.Fields {
		if k >= len(wr.Was) || c.Values[f] != wr.Was[k] {
			return false
		}
	}
	return true
}

func ids(writes []DataverseWrite, idx []int) []extract.ID {
	out := make([]extract.ID, len(idx))
	for k, i := range idx {
		out[k] = writes[i].ID
	}
	return out
}

// guard reads the writes without an ETag and either gives them the ETag
// just read or settles them: gone, or moved since the decision.
func (w *DataverseWriter) guard(ctx context.Context, writes []DataverseWrite, blind []int, results []WriteResult, done []bool) {
	if w.Reader == nil {
		for _, i := range blind {
			results[i], done[i] = WriteResult{Err: errors.New("not sent: no ETag, and no reader to read the contact first")}, true
		}
		return
	}
	cur, err := w.Reader.Current(ctx, ids(writes, blind))
	if err != nil {
		for _, i := range blind {
			results[i], done[i] = WriteResult{Err: fmt.Errorf("not sent: reading the contact before writing it: %w", err)}, true
		}
		return
	}
	for _, i := range blind {
		wr := &writes[i]
		c, ok := cur[wr.ID]
		switch {
		case !ok:
			results[i], done[i] = WriteResult{Status: http.StatusNotFound, Message: "the contact no longer exists"}, true
		case !unmoved(c, wr):
			results[i], done[i] = WriteResult{Err: ErrContactMoved}, true
		case strings.ContainsAny(c.ETag, "\r\n"):
			results[i], done[i] = WriteResult{Err: fmt.Errorf("not sent: the ETag the service sent (%q) cannot go back in a header", c.ETag)}, true
		default:
			wr.ETag = c.ETag
			if c.ETag == "" && w.noETags.CompareAndSwap(false, true) {
				w.Log.Warn().Str("contact", wr.ID.String()).Msg("the service sends no ETag: writes go with If-Match: * right after a read that found the contact unchanged")
			}
		}
	}
}

// settle reads back writes whose outcome is unknown. It returns those to
// send again: not applied, and the contact as it was (they now carry the
// ETag just read).
func (w *DataverseWriter) settle(ctx context.Context, writes []DataverseWrite, lost []int, results []WriteResult, resend bool) []int {
	timeout := w.ReadBackTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	// Read back even when a signal cut the answer off: what was applied
	// must be recorded as applied.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if w.Reader == nil {
		return nil
	}
	cur, err := w.Reader.Current(rctx, ids(writes, lost))
	if err != nil {
		for _, i := range lost {
			results[i].Err = fmt.Errorf("%w; reading the contact back failed: %v", results[i].Err, err)
		}
		return nil
	}
	var again []int
	applied := 0
	for _, i := range lost {
		wr := &writes[i]
		var lostBy *unknownOutcome
		errors.As(results[i].Err, &lostBy)
		why := lostBy.err
		c, ok := cur[wr.ID]
		sentAsRead := c.ETag != "" && c.ETag == wr.ETag || c.ETag == "" && unmoved(c, wr)
		switch {
		case !ok:
			results[i] = WriteResult{Status: http.StatusNotFound, Message: "the contact no longer exists", ReadBack: true}
		case holds(c, wr):
			results[i] = WriteResult{Status: http.StatusNoContent, ReadBack: true}
			applied++
		case sentAsRead && resend && !strings.ContainsAny(c.ETag, "\r\n"):
			wr.ETag = c.ETag
			again = append(again, i)
		case sentAsRead:
			results[i] = WriteResult{Err: fmt.Errorf("not applied (read back after: %v)", why), ReadBack: true}
		default:
			results[i] = WriteResult{Err: fmt.Errorf("%w (read back after: %v)", ErrContactMoved, why), ReadBack: true}
		}
	}
	w.Log.Info().Int("writes", len(lost)).Int("applied", applied).Int("sent_again", len(again)).
		Msg("read back Dynamics writes whose answer was lost or unreadable")
	return again
}

// send sends the writes idx in batches of the size in force, Concurrency
// at a time, splitting a batch the service finds too large.
func (w *DataverseWriter) send(ctx context.Context, writes []DataverseWrite, idx []int, results []WriteResult) {
	var mu sync.Mutex
	todo := [][]int{idx}
	take := func() []int {
		mu.Lock()
		defer mu.Unlock()
		if len(todo) == 0 {
			return nil
		}
		head, size := todo[0], int(w.size.Load())
		if len(head) <= size {
			todo = todo[1:]
			return head
		}
		todo[0] = head[size:]
		return head[:size]
	}
	put := func(parts ...[]int) {
		mu.Lock()
		todo = append(todo, parts...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for {
		for {
			// A batch is cut to size once it may go: a 413 meanwhile has
			// lowered the size.
			if err := w.gate.acquire(ctx); err != nil {
				for b := take(); b != nil; b = take() {
					for _, i := range b {
						results[i] = WriteResult{Err: fmt.Errorf("not sent: %w", err)}
					}
				}
				break
			}
			b := take()
			if b == nil {
				w.gate.release()
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer w.gate.release()
				w.batch(ctx, writes, b, results, put)
			}()
		}
		wg.Wait()
		mu.Lock()
		more := len(todo) > 0
		mu.Unlock()
		if !more {
			return
		}
	}
}

// shrink lowers the batch size in force to n after a batch of from was too
// large.
func (w *DataverseWriter) shrink(n, from int) {
	for {
		cur := w.size.Load()
		if int64(n) >= cur {
			return
		}
		if w.size.CompareAndSwap(cur, int64(n)) {
			w.Log.Warn().Int("refused_batch", from).Int("batch_size", n).
				Msg("the service refused a $batch as too large (413): sending smaller batches for the rest of this run")
			return
		}
	}
}

// batch sends one $batch of the writes b and fills their results; a batch
// the service finds too large goes back to the queue as two halves.
func (w *DataverseWriter) batch(ctx context.Context, writes []DataverseWrite, b []int, results []WriteResult, put func(...[]int)) {
	set := func(r WriteResult) {
		for _, i := range b {
			results[i] = r
		}
	}
	body, boundary, groups, err := w.encode(writes, b)
	if err != nil {
		set(WriteResult{Err: fmt.Errorf("not sent: %w", err)})
		return
	}
	req, err := http.NewRequestWithContext(apiclient.Unrepeatable(ctx), http.MethodPost, w.BaseURL+"$batch", bytes.NewReader(body))
	if err != nil {
		set(WriteResult{Err: fmt.Errorf("not sent: %w", err)})
		return
	}
	extract.SetODataHeaders(req.Header)
	req.Header.Set("Accept", "multipart/mixed")
	req.Header.Set("Content-Type", "multipart/mixed; boundary="+boundary)
	req.Header.Set("Prefer", "odata.continue-on-error")
	resp, err := w.Client.Do(req)
	if errors.Is(err, apiclient.ErrNotSent) {
		set(WriteResult{Err: fmt.Errorf("dataverse $batch: %w", extract.Unquery(err))})
		return
	}
	if err != nil {
		set(unknown(fmt.Errorf("dataverse $batch: %w", extract.Unquery(err))))
		return
	}
	defer resp.Body.Close()
	if hint, _ := strconv.Atoi(resp.Header.Get("x-ms-dop-hint")); hint > 0 {
		w.gate.limit(hint)
	}
	switch st := resp.StatusCode; {
	case st == http.StatusOK:
	case st == http.StatusRequestEntityTooLarge && len(b) > 1:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		half := len(b) / 2
		w.shrink(half, len(b))
		put(b[:half], b[half:])
		return
	case st >= 400 && st < 500 || st == http.StatusServiceUnavailable:
		// refused before any of it ran: 4xx (a 429 after every try), 503
		ae := extract.ReadAPIError("dataverse $batch", resp)
		set(WriteResult{Status: ae.Status, Code: ae.Code, Message: ae.Message, Err: ae})
		return
	default:
		// a 5xx, or a success other than 200: some of it may have run
		ae := extract.ReadAPIError("dataverse $batch", resp)
		set(unknown(ae))
		return
	}
	parts, err := readBatchAnswer(resp, groups)
	for k, i := range b {
		switch {
		case k < len(parts) && parts[k] != nil:
			results[i] = *parts[k]
		case err != nil:
			results[i] = unknown(fmt.Errorf("dataverse $batch: the answer does not parse: %w", err))
		default:
			results[i] = unknown(errors.New("dataverse $batch: the answer has no part for this request"))
		}
	}
}

// encode writes the multipart body: a change set per write, each request
// relative to the service root. It returns the body's boundary and each
// change set's boundary (a JSON batch answer names them as its
// atomicityGroup).
func (w *DataverseWriter) encode(writes []DataverseWrite, b []int) ([]byte, string, []string, error) {
	var buf bytes.Buffer
	batch := multipart.NewWriter(&buf)
	if err := batch.SetBoundary("batch_" + randomHex()); err != nil {
		return nil, "", nil, err
	}
	groups := make([]string, len(b))
	for k, i := range b {
		wr := &writes[i]
		fields := map[string]bool{}
		for j, f := range wr.Fields {
			fields[f] = wr.Values[j]
		}
		js, err := json.Marshal(fields)
		if err != nil {
			return nil, "", nil, err
		}
		var cs bytes.Buffer
		changeset := multipart.NewWriter(&cs)
		if err := changeset.SetBoundary("changeset_" + randomHex()); err != nil {
			return nil, "", nil, err
		}
		groups[k] = changeset.Boundary()
		part, err := changeset.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {"application/http"},
			"Content-Transfer-Encoding": {"binary"},
			"Content-Id":                {strconv.Itoa(k + 1)},
		})
		if err != nil {
			return nil, "", nil, err
		}
		// The ETag goes back exactly as read. None at all (a server
		// without ETags; the contact was read just before): "*", which
		// never creates a record.
		ifMatch := wr.ETag
		if ifMatch == "" {
			ifMatch = "*"
		}
		fmt.Fprintf(part, "PATCH contacts(%s) HTTP/1.1\r\nContent-Type: application/json\r\nIf-Match: %s\r\n\r\n%s\r\n", wr.ID, ifMatch, js)
		if err := changeset.Close(); err != nil {
			return nil, "", nil, err
		}
		outer, err := batch.CreatePart(textproto.MIMEHeader{"Content-Type": {"multipart/mixed; boundary=" + changeset.Boundary()}})
		if err != nil {
			return nil, "", nil, err
		}
		if _, err := outer.Write(cs.Bytes()); err != nil {
			return nil, "", nil, err
		}
	}
	if err := batch.Close(); err != nil {
		return nil, "", nil, err
	}
	return buf.Bytes(), batch.Boundary(), groups, nil
}

func randomHex() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// readBatchAnswer reads one result per change set sent, in the order sent
// (nil: no answer for it). A multipart answer has one top-level part per
// change set, in order — a nested multipart for one that succeeded, the
// failing request's response for one that did not; a part's Content-ID,
// when there is one, names its change set. A JSON batch answer names each
// response's change set by atomicityGroup. Parts read before a parse error
// are returned with it.
func readBatchAnswer(resp *http.Response, groups []string) ([]*WriteResult, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("content type %q: %w", resp.Header.Get("Content-Type"), err)
	}
	out := make([]*WriteResult, len(groups))
	switch {
	case mt == "application/json":
		return out, readJSONBatch(resp.Body, groups, out)
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		return out, readMultipartBatch(resp.Body, params["boundary"], out)
	}
	return nil, fmt.Errorf("content type %q is neither multipart nor JSON", resp.Header.Get("Content-Type"))
}

// place puts r at the change set a Content-ID names (1-based, as sent), or
// else at the next free place in order.
func place(out []*WriteResult, next *int, contentID string, r WriteResult) {
	if n, err := strconv.Atoi(contentID); err == nil && n >= 1 && n <= len(out) && out[n-1] == nil {
		out[n-1] = &r
		return
	}
	for *next < len(out) && out[*next] != nil {
		*next++
	}
	if *next < len(out) {
		out[*next] = &r
		*next++
	}
}

func readMultipartBatch(body io.Reader, boundary string, out []*WriteResult) error {
	mr := multipart.NewReader(body, boundary)
	next := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		mt, ps, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			return err
		}
		if strings.HasPrefix(mt, "multipart/") {
			inner := multipart.NewReader(part, ps["boundary"])
			res := WriteResult{Status: http.StatusNoContent}
			id := ""
			for {
				ip, err := inner.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				id = ip.Header.Get("Content-Id")
				r, err := readHTTPPart(ip)
				if err != nil {
					return err
				}
				if !r.OK() {
					res = r
				}
			}
			place(out, &next, id, res)
			continue
		}
		r, err := readHTTPPart(part)
		if err != nil {
			return err
		}
		place(out, &next, part.Header.Get("Content-Id"), r)
	}
}

func readHTTPPart(part io.Reader) (WriteResult, error) {
	resp, err := http.ReadResponse(bufio.NewReader(part), nil)
	if err != nil {
		return WriteResult{}, err
	}
	defer resp.Body.Close()
	r := WriteResult{Status: resp.StatusCode}
	if resp.StatusCode >= 300 {
		ae := extract.ReadAPIError("", resp)
		r.Code, r.Message = ae.Code, ae.Message
	}
	return r, nil
}

// readJSONBatch reads the OData JSON batch format:
// {"responses":[{"id","status","atomicityGroup","body"}]}.
func readJSONBatch(body io.Reader, groups []string, out []*WriteResult) error {
	var answer struct {
		Responses []struct {
			ID             string          `json:"id"`
			Status         int             `json:"status"`
			AtomicityGroup string          `json:"atomicityGroup"`
			Body           json.RawMessage `json:"body"`
		} `json:"responses"`
	}
	if err := json.NewDecoder(body).Decode(&answer); err != nil {
		return err
	}
	at := map[string]int{}
	for k, g := range groups {
		at[g] = k
	}
	for _, r := range answer.Responses {
		k, ok := at[r.AtomicityGroup]
		if !ok {
			// without its change set named, a response cannot be placed
			// with certainty; its write stays unknown and is read back
			continue
		}
		res := WriteResult{Status: r.Status}
		if r.Status >= 300 {
			var e struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			_ = json.Unmarshal(r.Body, &e)
			res.Code, res.Message = e.Error.Code, e.Error.Message
		}
		// one failing request makes its whole change set fail
		if out[k] == nil || !res.OK() {
			out[k] = &res
		}
	}
	return nil
}

// gate bounds batches in flight; the bound can only come down, to what
// the server suggests or after throttling.
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	n, max int
}

func newGate(n int) *gate {
	g := &gate{max: n}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) acquire(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.n >= g.max {
		if err := ctx.Err(); err != nil {
			return err
		}
		g.cond.Wait()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	g.n++
	return nil
}

func (g *gate) release() {
	g.mu.Lock()
	g.n--
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) limit(hint int) {
	g.mu.Lock()
	if hint < g.max {
		g.max = hint
	}
	g.mu.Unlock()
	g.cond.Broadcast()
}

// halve halves the bound (at least 1) and says what it was and is.
func (g *gate) halve() (from, to int) {
	g.mu.Lock()
	from = g.max
	g.max = max(g.max/2, 1)
	to = g.max
	g.mu.Unlock()
	g.cond.Broadcast()
	return from, to
}
