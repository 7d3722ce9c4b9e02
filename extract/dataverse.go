package extract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Dataverse reads contacts through the Dataverse Web API (OData v4), or
// any OData v4 server with a Dataverse-shaped contacts set. Client carries
// authentication and retries; Dataverse knows the API's shapes.
type Dataverse struct {
	Client   *http.Client
	BaseURL  string   // https://org.crm.dynamics.com/api/data/v9.2/
	Fields   []string // mapped boolean columns, in pair order
	PageSize int      // Prefer: odata.maxpagesize (at most 5000)
	// NotAfter is the latest modifiedon believed (see Layout.NotAfter).
	NotAfter time.Time
	// Concurrency bounds the requests of a bulk read (Contacts) in flight.
	Concurrency int

	// the ETags read, exactly as sent; Contact.ETag is an index into it
	mu   sync.Mutex
	tags []string
}

// Source names API rows in rejects.
const DataverseSource = "dataverse"

// ErrDeltaRefused says the service will not answer a stored delta link
// (expired or unknown token): the caller starts again with a full read.
var ErrDeltaRefused = errors.New("the change-tracking delta link was refused")

// APIError is an answer of the service that is not a success.
type APIError struct {
	Op      string
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return e.Op + ": " + StatusText(e.Status, e.Code, e.Message)
}

// StatusText describes a refusal: "HTTP 412 0x80060882: The version …".
// A code that only repeats the status (some servers send "412") is left out.
func StatusText(status int, code, message string) string {
	if code == strconv.Itoa(status) {
		code = ""
	}
	switch {
	case code == "" && message == "":
		return fmt.Sprintf("HTTP %d", status)
	case code == "":
		return fmt.Sprintf("HTTP %d: %s", status, message)
	}
	return fmt.Sprintf("HTTP %d %s: %s", status, code, message)
}

// ReadAPIError reads an OData error body ({"error":{"code","message"}}).
func ReadAPIError(op string, resp *http.Response) *APIError {
	e := &APIError{Op: op, Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	return e
}

func (d *Dataverse) selectQuery() string {
	cols := append([]string{"contactid", "modifiedon"}, d.Fields...)
	return "$select=" + strings.Join(cols, ",")
}

// QueryValue encodes a query option's value for a URL. A space is %20,
// never '+': OData servers other than Dataverse read '+' as a plus sign
// (the standard's ABNF has no '+' for a space) and refuse the query.
func QueryValue(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// TrackChanges reads with change tracking: from deltaLink when there is one
// (records changed and deleted since), else everything. It returns the new
// delta link to store once the run's writes are safe.
func (d *Dataverse) TrackChanges(ctx context.Context, deltaLink string, emit func(*Contact), reject func(Reject), deleted func(ID)) (string, error) {
	link := deltaLink
	if link == "" {
		link = d.BaseURL + "contacts?" + d.selectQuery()
	}
	var next string
	err := d.pages(ctx, link, "odata.track-changes", emit, reject, deleted, func(delta string) { next = delta })
	var ae *APIError
	if deltaLink != "" && errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusTooManyRequests &&
		ae.Status != http.StatusUnauthorized && ae.Status != http.StatusForbidden {
		return "", fmt.Errorf("%w: %v", ErrDeltaRefused, err)
	}
	if err != nil {
		return "", err
	}
	if next == "" {
		return "", fmt.Errorf("dataverse: the last page of a change-tracking read carried no @odata.deltaLink")
	}
	return next, nil
}

// ModifiedSince reads the contacts modified after since (all of them when
// since is zero).
func (d *Dataverse) ModifiedSince(ctx context.Context, since time.Time, emit func(*Contact), reject func(Reject)) error {
	link := d.BaseURL + "contacts?" + d.selectQuery()
	if !since.IsZero() {
		link += "&$filter=" + QueryValue("modifiedon gt "+since.UTC().Format(time.RFC3339))
	}
	return d.pages(ctx, link, "", emit, reject, nil, nil)
}

// BulkChunk is how many contacts one request of a bulk read asks for:
// about 6 KB of URL, well inside every server's limit.
const BulkChunk = 100

// Contacts reads the given contacts in bulk — BulkChunk at a time as
// $filter=contactid eq … or contactid eq …, which Dataverse and any OData
// 4.0 server understand (the 4.01 "in" operator is not documented for
// Dataverse), Concurrency requests in flight — and returns those that do
// not exist. emit and reject are called one at a time.
func (d *Dataverse) Contacts(ctx context.Context, ids []ID, emit func(*Contact), reject func(Reject)) (missing []ID, err error) {
	var mu sync.Mutex
	found := make(map[ID]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(d.Concurrency, 1))
	for lo := 0; lo < len(ids); lo += BulkChunk {
		chunk := ids[lo:min(lo+BulkChunk, len(ids))]
		g.Go(func() error {
			terms := make([]string, len(chunk))
			for i, id := range chunk {
				terms[i] = "contactid eq " + id.String()
			}
			link := d.BaseURL + "contacts?" + d.selectQuery() + "&$filter=" + QueryValue(strings.Join(terms, " or "))
			return d.pages(gctx, link, "", func(c *Contact) {
				mu.Lock()
				defer mu.Unlock()
				found[c.ID] = true
				emit(c)
			}, func(r Reject) {
				mu.Lock()
				defer mu.Unlock()
				reject(r)
			}, nil, nil)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if !found[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// Current is a contact as the service holds it now: what a write is checked
// against before it is sent without an ETag of this run, and after its
// answer was lost.
type Current struct {
	Modified int64
	ETag     string         // as sent ("" when the server sends none)
	Values   map[string]Tri // the mapped columns, by logical name
}

// Current reads the given contacts in bulk; a contact that does not exist
// is absent from the map.
func (d *Dataverse) Current(ctx context.Context, ids []ID) (map[ID]Current, error) {
	out := make(map[ID]Current, len(ids))
	_, err := d.Contacts(ctx, ids, func(c *Contact) {
		cur := Current{Modified: c.Modified, ETag: d.ETag(c), Values: make(map[string]Tri, len(d.Fields))}
		for i, f := range d.Fields {
			cur.Values[f] = c.Values[i]
		}
		out[c.ID] = cur
	}, func(Reject) {}) // a value that is not a boolean stays unknown: it matches nothing
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ETag is the ETag the service sent with a contact this reader read,
// exactly as sent ("" for none, or a contact from elsewhere).
func (d *Dataverse) ETag(c *Contact) string {
	if c.ETag == 0 {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if int(c.ETag) > len(d.tags) {
		return ""
	}
	return d.tags[c.ETag-1]
}

func (d *Dataverse) keepETag(tag string) uint32 {
	if tag == "" {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tags = append(d.tags, tag)
	return uint32(len(d.tags))
}

func (d *Dataverse) get(ctx context.Context, link, prefer string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return nil, fmt.Errorf("dataverse: %w", err)
	}
	SetODataHeaders(req.Header)
	p := []string{fmt.Sprintf("odata.maxpagesize=%d", d.pageSize())}
	if prefer != "" {
		p = append(p, prefer)
	}
	req.Header.Set("Prefer", strings.Join(p, ","))
	resp, err := d.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dataverse: GET %s: %w", redact(link), Unquery(err))
	}
	return resp, nil
}

// SetODataHeaders sets the headers every Web API request carries, reads
// and writes alike (a $batch then asks for multipart/mixed instead).
func SetODataHeaders(h http.Header) {
	h.Set("OData-Version", "4.0")
	h.Set("OData-MaxVersion", "4.0")
	h.Set("Accept", "application/json")
}

func (d *Dataverse) pageSize() int {
	if d.PageSize <= 0 || d.PageSize > 5000 {
		return 5000
	}
	return d.PageSize
}

// redact keeps query strings (tokens, skip tokens) out of messages.
func redact(link string) string {
	if i := strings.IndexByte(link, '?'); i >= 0 {
		return link[:i]
	}
	return link
}

// Unquery takes the *url.Error an http.Client wraps every failure in off
// err: it prints the request's whole URL, query string and all, and the
// callers name the request themselves without it.
func Unquery(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// resolve turns a link a page carries into one to follow: an absolute link
// exactly as given, a relative one (a standard OData server may send
// "contacts?$skiptoken=…") against the URL of the request that got it.
func resolve(base, link string) (string, error) {
	u, err := url.Parse(link)
	if err != nil {
		return "", fmt.Errorf("the link the service sent does not parse: %w", err)
	}
	if u.IsAbs() {
		return link, nil
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(u).String(), nil
}

type odataPage struct {
	Value     []map[string]json.RawMessage `json:"value"`
	NextLink  string                       `json:"@odata.nextLink"`
	DeltaLink string                       `json:"@odata.deltaLink"`
}

// pageTries bounds how often a page whose body does not parse is fetched
// again: a truncated body is usually a dropped connection.
const pageTries = 3

// pages follows @odata.nextLink as given (a relative one resolved against
// the page's URL) until a page has none.
func (d *Dataverse) pages(ctx context.Context, link, prefer string, emit func(*Contact), reject func(Reject), deleted func(ID), delta func(string)) error {
	n := 0
	for link != "" {
		var page odataPage
		var err error
		for try := 1; try <= pageTries; try++ {
			if page, err = d.page(ctx, link, prefer); err == nil {
				break
			}
			var ae *APIError
			if errors.As(err, &ae) || ctx.Err() != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
		for _, rec := range page.Value {
			n++
			d.record(rec, n, emit, reject, deleted)
		}
		if page.DeltaLink != "" && delta != nil {
			dl, err := resolve(link, page.DeltaLink)
			if err != nil {
				return fmt.Errorf("dataverse: GET %s: @odata.deltaLink: %w", redact(link), err)
			}
			delta(dl)
		}
		next := ""
		if page.NextLink != "" {
			if next, err = resolve(link, page.NextLink); err != nil {
				return fmt.Errorf("dataverse: GET %s: @odata.nextLink: %w", redact(link), err)
			}
		}
		link = next
	}
	return nil
}

func (d *Dataverse) page(ctx context.Context, link, prefer string) (odataPage, error) {
	var page odataPage
	resp, err := d.get(ctx, link, prefer)
	if err != nil {
		return page, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return page, ReadAPIError("dataverse: GET "+redact(link), resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return page, fmt.Errorf("dataverse: GET %s: the page does not parse: %w", redact(link), err)
	}
	return page, nil
}

// record turns one OData entity into a Contact; n numbers it for rejects.
func (d *Dataverse) record(rec map[string]json.RawMessage, n int, emit func(*Contact), reject func(Reject), deleted func(ID)) {
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(rec[k], &s)
		return s
	}
	if ctx := str("@odata.context"); strings.HasSuffix(ctx, "$deletedEntity") {
		if id, ok := ParseID(str("id")); ok && deleted != nil {
			deleted(id)
		}
		return
	}
	raw := str("contactid")
	id, ok := ParseID(raw)
	if !ok {
		reject(Reject{Source: DataverseAPI(), Line: n, ID: raw, Reason: fmt.Sprintf("contactid %q is not a GUID", clip(raw))})
		return
	}
	c := Contact{ID: id, Line: int32(n), ETag: d.keepETag(str("@odata.etag"))}
	var problems []string
	if c.Modified, ok = ParseTime(str("modifiedon"), ""); !ok {
		problems = append(problems, fmt.Sprintf("modifiedon %q is not a timestamp", clip(str("modifiedon"))))
	} else if why := Future("modifiedon", c.Modified, d.NotAfter); why != "" {
		problems = append(problems, why)
	}
	for i, f := range d.Fields {
		v, present := rec[f]
		switch s := string(v); {
		case !present || s == "null":
			c.Values[i] = Unknown
		case s == "true":
			c.Values[i] = True
		case s == "false":
			c.Values[i] = False
		default:
			problems = append(problems, fmt.Sprintf("%s %s is not a boolean", f, clip(s)))
		}
	}
	if problems != nil {
		c.Bad = true
		reject(Reject{Source: DataverseAPI(), Line: n, ID: id.String(), IDChecked: true, Reason: strings.Join(problems, "; ")})
	}
	emit(&c)
}

// Attributes lists contact's columns with their attribute types, and
// whether change tracking is enabled on the table: what validate --online
// checks the mapping against.
func (d *Dataverse) Attributes(ctx context.Context) (types map[string]string, changeTracking bool, err error) {
	resp, err := d.get(ctx, d.BaseURL+"EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,AttributeType", "")
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, ReadAPIError("dataverse: reading contact's attributes", resp)
	}
	var attrs struct {
		Value []struct {
			LogicalName   string `json:"LogicalName"`
			AttributeType string `json:"AttributeType"`
		} `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&attrs); err != nil {
		return nil, false, fmt.Errorf("dataverse: reading contact's attributes: %w", err)
	}
	types = map[string]string{}
	for _, a := range attrs.Value {
		types[a.LogicalName] = a.AttributeType
	}
	resp2, err := d.get(ctx, d.BaseURL+"EntityDefinitions(LogicalName='contact')?$select=ChangeTrackingEnabled", "")
	if err != nil {
		return nil, false, err
	}
	defer resp2.Body.Close()
	if resp2.StatusCode != http.StatusOK {
		return nil, false, ReadAPIError("dataverse: reading contact's table definition", resp2)
	}
	var def struct {
		ChangeTrackingEnabled bool `json:"ChangeTrackingEnabled"`
	}
	if err := json.NewDecoder(resp2.Body).Decode(&def); err != nil {
		return nil, false, fmt.Errorf("dataverse: reading contact's table definition: %w", err)
	}
	return types, def.ChangeTrackingEnabled, nil
}
