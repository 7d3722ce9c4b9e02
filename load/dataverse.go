package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"

	"optsync/extract"
)

// DataverseWrite is one contact's fields to PATCH, in their own polarity.
type DataverseWrite struct {
	ID      extract.ID
	Version int64 // If-Match W/"Version"; 0: If-Match * (never creates)
	Fields  []string
	Values  []bool
}

// WriteResult is how one write went.
type WriteResult struct {
	Status  int    // the write's own HTTP status; 0 when it never got one
	Code    string // the service's error code
	Message string
	Err     error // transport failure, or the batch as a whole failing
}

// OK reports a write the service applied.
func (r WriteResult) OK() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

// Error describes a failed write for the audit file.
func (r WriteResult) Error() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	if r.Code == "" && r.Message == "" {
		return fmt.Sprintf("HTTP %d", r.Status)
	}
	return fmt.Sprintf("HTTP %d %s: %s", r.Status, r.Code, r.Message)
}

// DataverseWriter applies writes through $batch: one change set per
// contact, so a contact's fields change together, and
// Prefer: odata.continue-on-error, so one refused contact does not stop
// the others.
type DataverseWriter struct {
	Client      *http.Client
	BaseURL     string
	BatchSize   int // requests per batch, at most 1000
	Concurrency int // batches in flight; lowered to the server's x-ms-dop-hint
}

// Apply sends every write and returns one result per write, in order.
func (w *DataverseWriter) Apply(ctx context.Context, writes []DataverseWrite) []WriteResult {
	results := make([]WriteResult, len(writes))
	size := min(max(w.BatchSize, 1), 1000)
	gate := newGate(max(w.Concurrency, 1))
	var wg sync.WaitGroup
	for lo := 0; lo < len(writes); lo += size {
		hi := min(lo+size, len(writes))
		if err := gate.acquire(ctx); err != nil {
			for i := lo; i < len(writes); i++ {
				results[i] = WriteResult{Err: fmt.Errorf("not sent: %w", err)}
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer gate.release()
			hint := w.batch(ctx, writes[lo:hi], results[lo:hi])
			if hint > 0 {
				gate.limit(hint)
			}
		}()
	}
	wg.Wait()
	return results
}

// batch sends one $batch and fills results; it returns the server's
// x-ms-dop-hint (0 when absent).
func (w *DataverseWriter) batch(ctx context.Context, writes []DataverseWrite, results []WriteResult) int {
	fail := func(err error) int {
		for i := range results {
			results[i] = WriteResult{Err: err}
		}
		return 0
	}
	body, boundary, err := w.encode(writes)
	if err != nil {
		return fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.BaseURL+"$batch", bytes.NewReader(body))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("OData-Version", "4.0")
	req.Header.Set("OData-MaxVersion", "4.0")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "multipart/mixed; boundary="+boundary)
	req.Header.Set("Prefer", "odata.continue-on-error")
	resp, err := w.Client.Do(req)
	if err != nil {
		return fail(fmt.Errorf("dataverse $batch: %w", err))
	}
	defer resp.Body.Close()
	hint, _ := strconv.Atoi(resp.Header.Get("x-ms-dop-hint"))
	if resp.StatusCode != http.StatusOK {
		ae := extract.ReadAPIError("dataverse $batch", resp)
		for i := range results {
			results[i] = WriteResult{Status: ae.Status, Code: ae.Code, Message: ae.Message, Err: ae}
		}
		return hint
	}
	parts, err := readBatchResponse(resp)
	if err != nil {
		fail(fmt.Errorf("dataverse $batch: reading the response: %w", err))
		return hint
	}
	for i := range results {
		if i >= len(parts) {
			results[i] = WriteResult{Err: fmt.Errorf("dataverse $batch: no response for this request (the batch stopped early)")}
			continue
		}
		results[i] = parts[i]
	}
	return hint
}

// encode writes the multipart body: a change set per write.
func (w *DataverseWriter) encode(writes []DataverseWrite) ([]byte, string, error) {
	var buf bytes.Buffer
	batch := multipart.NewWriter(&buf)
	for _, wr := range writes {
		fields := map[string]bool{}
		for i, f := range wr.Fields {
			fields[f] = wr.Values[i]
		}
		js, err := json.Marshal(fields)
		if err != nil {
			return nil, "", err
		}
		var cs bytes.Buffer
		changeset := multipart.NewWriter(&cs)
		part, err := changeset.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {"application/http"},
			"Content-Transfer-Encoding": {"binary"},
			"Content-Id":                {"1"},
		})
		if err != nil {
			return nil, "", err
		}
		ifMatch := "*"
		if wr.Version > 0 {
			ifMatch = fmt.Sprintf(`W/"%d"`, wr.Version)
		}
		fmt.Fprintf(part, "PATCH %scontacts(%s) HTTP/1.1\r\nContent-Type: application/json\r\nIf-Match: %s\r\n\r\n%s\r\n",
			w.BaseURL, wr.ID, ifMatch, js)
		if err := changeset.Close(); err != nil {
			return nil, "", err
		}
		outer, err := batch.CreatePart(textproto.MIMEHeader{"Content-Type": {"multipart/mixed; boundary=" + changeset.Boundary()}})
		if err != nil {
			return nil, "", err
		}
		if _, err := outer.Write(cs.Bytes()); err != nil {
			return nil, "", err
		}
	}
	if err := batch.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), batch.Boundary(), nil
}

// readBatchResponse reads one result per top-level part: a change set that
// succeeded answers with a nested multipart (its one response), one that
// failed with the single response of the failing request.
func readBatchResponse(resp *http.Response) ([]WriteResult, error) {
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		return nil, fmt.Errorf("content type %q is not multipart", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var out []WriteResult
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		mt, ps, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			return out, err
		}
		if strings.HasPrefix(mt, "multipart/") {
			inner := multipart.NewReader(part, ps["boundary"])
			res := WriteResult{Status: http.StatusNoContent}
			for {
				ip, err := inner.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					return out, err
				}
				if r, err := readHTTPPart(ip); err != nil {
					return out, err
				} else if !r.OK() {
					res = r
				}
			}
			out = append(out, res)
			continue
		}
		r, err := readHTTPPart(part)
		if err != nil {
			return out, err
		}
		out = append(out, r)
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

// gate bounds batches in flight; the bound can only come down, to what
// the server suggests.
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
