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
	"time"
)

// Dataverse reads contacts through the Dataverse Web API (OData v4). Client
// carries authentication and retries; Dataverse knows the API's shapes.
type Dataverse struct {
	Client   *http.Client
	BaseURL  string   // https://org.crm.dynamics.com/api/data/v9.2/
	Fields   []string // mapped boolean columns, in pair order
	PageSize int      // Prefer: odata.maxpagesize (at most 5000)
	// NotAfter is the latest modifiedon believed (see Layout.NotAfter).
	NotAfter time.Time
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
	if e.Code == "" && e.Message == "" {
		return fmt.Sprintf("%s: HTTP %d", e.Op, e.Status)
	}
	return fmt.Sprintf("%s: HTTP %d %s: %s", e.Op, e.Status, e.Code, e.Message)
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
		link += "&$filter=" + url.QueryEscape("modifiedon gt "+since.UTC().Format(time.RFC3339))
	}
	return d.pages(ctx, link, "", emit, reject, nil, nil)
}

// Contact reads one contact (a point read for the retry queue).
func (d *Dataverse) Contact(ctx context.Context, id ID, emit func(*Contact), reject func(Reject)) (bool, error) {
	resp, err := d.get(ctx, d.BaseURL+"contacts("+id.String()+")?"+d.selectQuery(), "")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, ReadAPIError("dataverse: reading contact "+id.String(), resp)
	}
	var rec map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return false, fmt.Errorf("dataverse: reading contact %s: %w", id, err)
	}
	d.record(rec, 0, emit, reject, nil)
	return true, nil
}

func (d *Dataverse) get(ctx context.Context, link, prefer string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return nil, fmt.Errorf("dataverse: %w", err)
	}
	setODataHeaders(req.Header)
	p := []string{fmt.Sprintf("odata.maxpagesize=%d", d.pageSize())}
	if prefer != "" {
		p = append(p, prefer)
	}
	req.Header.Set("Prefer", strings.Join(p, ","))
	resp, err := d.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dataverse: GET %s: %w", redact(link), err)
	}
	return resp, nil
}

// SetODataHeaders sets the headers every Web API request carries.
func setODataHeaders(h http.Header) {
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

type odataPage struct {
	Value     []map[string]json.RawMessage `json:"value"`
	NextLink  string                       `json:"@odata.nextLink"`
	DeltaLink string                       `json:"@odata.deltaLink"`
}

// pageTries bounds how often a page whose body does not parse is fetched
// again: a truncated body is usually a dropped connection.
const pageTries = 3

// pages follows @odata.nextLink exactly as given until a page has none.
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
			delta(page.DeltaLink)
		}
		link = page.NextLink
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
		reject(Reject{Source: DataverseSource, Line: n, ID: raw, Reason: fmt.Sprintf("contactid %q is not a GUID", clip(raw))})
		return
	}
	c := Contact{ID: id, Line: int32(n), Version: parseETag(str("@odata.etag"))}
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
		reject(Reject{Source: DataverseSource, Line: n, ID: id.String(), IDChecked: true, Reason: strings.Join(problems, "; ")})
	}
	emit(&c)
}

// parseETag reads the row version of a weak ETag W/"4801245" (0: none).
func parseETag(tag string) int64 {
	tag = strings.TrimPrefix(tag, "W/")
	v, err := strconv.ParseInt(strings.Trim(tag, `"`), 10, 64)
	if err != nil {
		return 0
	}
	return v
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
