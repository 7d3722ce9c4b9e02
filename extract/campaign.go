package extract

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Campaign reads profiles through the Campaign Standard REST API. Client
// carries authentication (and X-Api-Key) and retries.
type Campaign struct {
	Client *http.Client
	// APIURL is https://mc.adobe.io/<ORGANIZATION>/campaign/.
	APIURL   string
	Resource string   // profileAndServices or profileAndServicesExt
	Fields   []string // mapped opt-out fields, in pair order
	// FieldTimes names, per mapped field, a profile attribute holding that
	// field's change time ("" = none).
	FieldTimes []string
	PageSize   int // _lineCount
	// NotAfter is the latest change time believed (see Layout.NotAfter).
	NotAfter time.Time
}

// CampaignSource names API rows in rejects.
const CampaignSource = "campaign api"

// paging is the query every paged read ends with. Campaign leaves "next"
// out of a list of a table larger than its XtkBigTableThreshold (100,000
// rows by default) unless the request asks for _forcePagination: without
// it a big table would be read one page deep, and taken for all of it.
func paging(lineCount int) string {
	return fmt.Sprintf("_lineCount=%d&_forcePagination=true", lineCount)
}

// List reads every profile, page by page; their PKeys and field times go
// to keys.
func (c *Campaign) List(ctx context.Context, keys *KeyWriter, emit func(*Profile), reject func(Reject)) (Stats, error) {
	return c.pages(ctx, fmt.Sprintf("%s%s/profile?%s", c.APIURL, c.Resource, paging(c.pageSize())), keys, emit, reject)
}

// ChangedSince reads the profiles a custom "changed since" filter returns:
// profileAndServicesExt/profile/by<Name>?<Param>=<since>.
func (c *Campaign) ChangedSince(ctx context.Context, name, param string, since time.Time, keys *KeyWriter, emit func(*Profile), reject func(Reject)) (Stats, error) {
	link := fmt.Sprintf("%sprofileAndServicesExt/profile/by%s?%s=%s&%s", c.APIURL, name,
		QueryValue(param), QueryValue(since.UTC().Format("2006-01-02 15:04:05.000Z")), paging(c.pageSize()))
	return c.pages(ctx, link, keys, emit, reject)
}

// Profile reads one profile by PKey: the re-read before clearing an
// opt-out, which looks at its time and values. What it names (its PKey,
// field times) is in a Keys no one else reads: the caller knows the PKey.
func (c *Campaign) Profile(ctx context.Context, pkey string) (p Profile, found bool, err error) {
	rec, found, err := c.fetch(ctx, pkey)
	if !found || err != nil {
		return p, found, err
	}
	found = false
	var st Stats
	c.record(rec, 0, &st, NewKeys().Writer(), func(q *Profile) { p, found = *q, true }, func(Reject) {})
	return p, found, nil
}

// fetch reads one profile's resource by PKey.
func (c *Campaign) fetch(ctx context.Context, pkey string) (map[string]json.RawMessage, bool, error) {
	resp, err := c.get(ctx, c.APIURL+c.Resource+"/profile/"+url.PathEscape(pkey))
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, false, ReadCampaignError("campaign: reading profile "+pkey, resp)
	}
	var rec map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return nil, false, fmt.Errorf("campaign: reading profile %s: %w", pkey, err)
	}
	return rec, true, nil
}

func (c *Campaign) pageSize() int {
	if c.PageSize <= 0 {
		return 500
	}
	return c.PageSize
}

func (c *Campaign) get(ctx context.Context, link string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return nil, fmt.Errorf("campaign: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("campaign: GET %s: %w", redact(link), Unquery(err))
	}
	return resp, nil
}

// ReadCampaignError reads Campaign's error bodies: {"code","message"} from
// Campaign itself, {"error_code","message"} from the gateway in front.
func ReadCampaignError(op string, resp *http.Response) *APIError {
	e := &APIError{Op: op, Status: resp.StatusCode}
	var body struct {
		Code      json.RawMessage `json:"code"`
		ErrorCode string          `json:"error_code"`
		Message   string          `json:"message"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) == nil {
		e.Code, e.Message = strings.Trim(string(body.Code), `"`), body.Message
		if body.ErrorCode != "" {
			e.Code = body.ErrorCode
		}
	}
	return e
}

type campaignPage struct {
	Content []map[string]json.RawMessage `json:"content"`
	Next    *struct {
		Href string `json:"href"`
	} `json:"next"`
}

// pages follows next.href as given (a relative one against the page's URL)
// until a page has none.
func (c *Campaign) pages(ctx context.Context, link string, keys *KeyWriter, emit func(*Profile), reject func(Reject)) (Stats, error) {
	var st Stats
	n := 0
	for link != "" {
		var page campaignPage
		var err error
		for try := 1; try <= pageTries; try++ {
			if page, err = c.page(ctx, link); err == nil {
				break
			}
			if _, api := err.(*APIError); api || ctx.Err() != nil {
				return st, err
			}
		}
		if err != nil {
			return st, err
		}
		for _, rec := range page.Content {
			n++
			c.record(rec, n, &st, keys, emit, reject)
		}
		next := ""
		if page.Next != nil && page.Next.Href != "" {
			if next, err = resolve(link, page.Next.Href); err != nil {
				return st, fmt.Errorf("campaign: GET %s: next.href: %w", redact(link), err)
			}
		}
		link = next
	}
	return st, nil
}

func (c *Campaign) page(ctx context.Context, link string) (campaignPage, error) {
	var page campaignPage
	resp, err := c.get(ctx, link)
	if err != nil {
		return page, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return page, ReadCampaignError("campaign: GET "+redact(link), resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return page, fmt.Errorf("campaign: GET %s: the page does not parse: %w", redact(link), err)
	}
	return page, nil
}

// record turns one profile resource into a Profile. A profile without a
// GUID externalId belongs to no contact: counted, never emitted.
func (c *Campaign) record(rec map[string]json.RawMessage, n int, st *Stats, keys *KeyWriter, emit func(*Profile), reject func(Reject)) {
	st.Rows++
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(rec[k], &s)
		return s
	}
	pkey := str("PKey")
	id, linked := ParseID(str("externalId"))
	if !IsPKey(pkey) {
		st.Rejected++
		reject(Reject{Source: CampaignAPI(), Line: n, ID: pkey, Reason: fmt.Sprintf("PKey %q is not of the form @ followed by letters, digits, _ or -", clip(pkey))})
		if linked {
			// As in files: a profile of that contact that cannot be told
			// apart from its others keeps the contact out of the run.
			emit(&Profile{ID: id, Modified: NoTime, Line: int32(n), Bad: true})
		}
		return
	}
	if !linked {
		// Linked to no contact, but perhaps the latest row of a PKey
		// another row links to one (a queued profile read again, say).
		st.Unlinked++
		p := Profile{PKey: keys.Put(pkey), Line: int32(n), Unlinked: true}
		p.Modified = unlinkedTime(str("lastModified"), "", c.NotAfter)
		emit(&p)
		return
	}
	p := Profile{ID: id, PKey: keys.Put(pkey), Line: int32(n)}
	var ok bool
	var problems []string
	if p.Modified, ok = ParseTime(str("lastModified"), ""); !ok {
		problems = append(problems, fmt.Sprintf("lastModified %q is not a timestamp", clip(str("lastModified"))))
	} else if why := Future("lastModified", p.Modified, c.NotAfter); why != "" {
		problems = append(problems, why)
	}
	for i, f := range c.Fields {
		switch v := string(rec[f]); v {
		case "", "null":
			p.Values[i] = Unknown
		case "true":
			p.Values[i] = True
		case "false":
			p.Values[i] = False
		default:
			problems = append(problems, fmt.Sprintf("%s %s is not a boolean", f, clip(v)))
		}
	}
	times, anyTime := NoFieldTimes(), false
	for i, col := range c.FieldTimes {
		if col == "" || str(col) == "" {
			continue
		}
		anyTime = true
		if times[i], ok = ParseTime(str(col), ""); !ok {
			problems = append(problems, fmt.Sprintf("%s %q is not a timestamp", col, clip(str(col))))
		} else if why := Future(col, times[i], c.NotAfter); why != "" {
			problems = append(problems, why)
		}
	}
	if anyTime {
		p.FieldModified = keys.PutTimes(&times)
	}
	if problems != nil {
		st.Rejected++
		p.Bad = true
		reject(Reject{Source: CampaignAPI(), Line: n, ID: pkey, IDChecked: true, Reason: strings.Join(problems, "; ")})
	}
	emit(&p)
}

// ResourceFields lists the profile resource's fields and their types
// (resourceType metadata): what validate --online checks the mapping
// against.
func (c *Campaign) ResourceFields(ctx context.Context) (map[string]string, error) {
	resp, err := c.get(ctx, c.APIURL+c.Resource+"/resourceType/profile")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, ReadCampaignError("campaign: reading the profile resource's metadata", resp)
	}
	var meta struct {
		Content map[string]struct {
			Type string `json:"type"`
		} `json:"content"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&meta); err != nil {
		return nil, fmt.Errorf("campaign: reading the profile resource's metadata: %w", err)
	}
	types := map[string]string{}
	for name, f := range meta.Content {
		types[name] = f.Type
	}
	return types, nil
}

// Value is a profile's value of one mapped field (Unknown when the field
// is not mapped).
func (c *Campaign) Value(p *Profile, field string) Tri {
	for i, f := range c.Fields {
		if f == field {
			return p.Values[i]
		}
	}
	return Unknown
}

// History is what a profile's marketing history says about unsubscribes.
type History struct {
	// Readable is false when the service has no history for the profile
	// (404): nothing can be said either way.
	Readable bool
	// OptOut is the time (Unix ms) of an unsubscription later than the
	// time asked about; 0: none.
	OptOut int64
}

// UnsubscribedAfter reads a profile's marketing history
// (<resource>/history/<PKey>/events, newest first) for an unsubscription
// (an event of type optOut) dated after the given time (Unix ms): the
// evidence of a person's unsubscribe that a write overwrote, which the
// profile itself no longer shows.
func (c *Campaign) UnsubscribedAfter(ctx context.Context, pkey string, after int64) (History, error) {
	link := fmt.Sprintf("%s%s/history/%s/events?%s", c.APIURL, c.Resource, url.PathEscape(pkey), paging(25))
	for link != "" {
		resp, err := c.get(ctx, link)
		if err != nil {
			return History{}, err
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			return History{}, nil
		}
		if resp.StatusCode != http.StatusOK {
			err := ReadCampaignError("campaign: reading the history of profile "+pkey, resp)
			resp.Body.Close()
			return History{}, err
		}
		var page struct {
			Content []struct {
				Date string `json:"date"`
				Type string `json:"type"`
			} `json:"content"`
			Next *struct {
				Href string `json:"href"`
			} `json:"next"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return History{}, fmt.Errorf("campaign: reading the history of profile %s: %w", pkey, err)
		}
		newer := false
		for _, e := range page.Content {
			t, ok := ParseTime(e.Date, "")
			if !ok {
				return History{}, fmt.Errorf("campaign: the history of profile %s has an event dated %q, not a timestamp", pkey, clip(e.Date))
			}
			if t <= after {
				continue
			}
			newer = true
			if strings.EqualFold(e.Type, "optOut") {
				return History{Readable: true, OptOut: t}, nil
			}
		}
		// Newest first: a page with nothing newer ends the search.
		link = ""
		if page.Next != nil && newer {
			link = page.Next.Href
		}
	}
	return History{Readable: true}, nil
}
