package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"optsync/extract"
)

// CampaignWrite is one profile's fields to PATCH.
type CampaignWrite struct {
	ID     extract.ID
	PKey   string
	Fields []string
	Values []bool
	// A write that clears an opt-out is made only if the profile still is
	// as it was read: Modified (lastModified, Unix ms) and Was, the read
	// values of Fields. This API has no conditional write; a fresh
	// unsubscribe in Campaign must never be overwritten.
	ClearsOptOut bool
	Modified     int64
	Was          []extract.Tri
}

// ErrMoved marks a write dropped because the profile changed since it was
// read; the contact is decided again next run.
var ErrMoved = fmt.Errorf("the profile changed in Campaign since it was read; not overwritten")

// CampaignWriter PATCHes profiles, up to Concurrency at once (Campaign has
// no batch endpoint).
type CampaignWriter struct {
	Client      *http.Client
	Reader      *extract.Campaign // the re-read before clearing an opt-out
	APIURL      string
	Resource    string
	Concurrency int
}

// Apply sends every write and returns one result per write, in order.
func (w *CampaignWriter) Apply(ctx context.Context, writes []CampaignWrite) []WriteResult {
	results := make([]WriteResult, len(writes))
	sem := make(chan struct{}, max(w.Concurrency, 1))
	var wg sync.WaitGroup
	for i := range writes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			for k := i; k < len(writes); k++ {
				results[k] = WriteResult{Err: fmt.Errorf("not sent: %w", ctx.Err())}
			}
			wg.Wait()
			return results
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = w.one(ctx, &writes[i])
		}()
	}
	wg.Wait()
	return results
}

func (w *CampaignWriter) one(ctx context.Context, cw *CampaignWrite) WriteResult {
	if cw.ClearsOptOut {
		now, found, err := w.Reader.Profile(ctx, cw.PKey)
		if err != nil {
			return WriteResult{Err: fmt.Errorf("re-reading before clearing an opt-out: %w", err)}
		}
		if !found {
			return WriteResult{Status: http.StatusNotFound, Message: "the profile no longer exists"}
		}
		// An unknown lastModified (unreadable now, or forgotten in state
		// for lying in the future) cannot show the profile unchanged.
		if now.Modified == extract.NoTime || now.Modified != cw.Modified {
			return WriteResult{Err: ErrMoved}
		}
		for i, f := range cw.Fields {
			if v := w.Reader.Value(&now, f); v != cw.Was[i] {
				return WriteResult{Err: ErrMoved}
			}
		}
	}
	body := map[string]bool{}
	for i, f := range cw.Fields {
		body[f] = cw.Values[i]
	}
	js, err := json.Marshal(body)
	if err != nil {
		return WriteResult{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, w.APIURL+w.Resource+"/profile/"+url.PathEscape(cw.PKey), bytes.NewReader(js))
	if err != nil {
		return WriteResult{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := w.Client.Do(req)
	if err != nil {
		return w.readBack(ctx, cw, fmt.Errorf("campaign PATCH: %w", extract.Unquery(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		ae := extract.ReadCampaignError("", resp)
		r := WriteResult{Status: resp.StatusCode, Code: ae.Code, Message: ae.Message}
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
			// a 5xx after every try: the PATCH may have been applied
			return w.readBack(ctx, cw, errors.New("campaign PATCH: "+r.Error()))
		}
		return r
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return WriteResult{Status: resp.StatusCode}
}

// readBack settles a PATCH whose outcome is unknown by reading the profile:
// applied if it holds the written values, failed (and queued) if not.
func (w *CampaignWriter) readBack(ctx context.Context, cw *CampaignWrite, why error) WriteResult {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	now, found, err := w.Reader.Profile(rctx, cw.PKey)
	switch {
	case err != nil:
		return WriteResult{Err: fmt.Errorf("outcome unknown: %v; reading the profile back failed: %v", why, err)}
	case !found:
		return WriteResult{Status: http.StatusNotFound, Message: "the profile no longer exists", ReadBack: true}
	}
	for i, f := range cw.Fields {
		if w.Reader.Value(&now, f) != extract.Of(cw.Values[i]) {
			return WriteResult{Err: fmt.Errorf("outcome unknown: %v; read back: not applied", why), ReadBack: true}
		}
	}
	return WriteResult{Status: http.StatusOK, ReadBack: true}
}
