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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"optsync/extract"
	"optsync/extract/apiclient"
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

// clears reports whether the write sets any field to false: a person's
// unsubscribe landing meanwhile would be overwritten by it.
func (cw *CampaignWrite) clears() bool {
	if cw.ClearsOptOut {
		return true
	}
	for _, v := range cw.Values {
		if !v {
			return true
		}
	}
	return false
}

// ErrMoved marks a write dropped because the profile changed since it was
// read; the contact is decided again next run.
var ErrMoved = fmt.Errorf("the profile changed in Campaign since it was read; not overwritten")

// ErrRaced marks a write that cleared an opt-out while its person
// unsubscribed: the opt-out was set back (or was found back), the write
// counts as not applied and the contact is decided again next run.
var ErrRaced = errors.New("unsubscribe-race-restored")

// ErrNotRestored marks a raced write whose opt-out could not be set back.
var ErrNotRestored = errors.New("unsubscribe race, opt-out NOT set back")

// CampaignWriter PATCHes profiles, up to Concurrency at once (Campaign has
// no batch endpoint).
type CampaignWriter struct {
	Client      *http.Client
	Reader      *extract.Campaign // the re-reads around clearing an opt-out
	APIURL      string
	Resource    string
	Concurrency int
	// MaxTries bounds the tries of a clearing PATCH whose answer was a
	// failure other than throttling (429, 503: waited, not counted).
	MaxTries int
	// NoHistory is set when a profile's marketing history could not be
	// found (404): the race check then rests on lastModified alone.
	NoHistory atomic.Bool
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
			if writes[i].clears() {
				results[i] = w.guarded(ctx, &writes[i])
			} else {
				results[i] = w.unguarded(ctx, &writes[i])
			}
		}()
	}
	wg.Wait()
	return results
}

// patchAnswer is a PATCH's result and when the service gave it.
type patchAnswer struct {
	WriteResult
	at    time.Time // the service's Date header, else the local clock
	exact bool      // at is the local clock (Date has whole seconds)
	// retryAfter is set on a throttled answer (429, 503): not applied.
	retryAfter time.Duration
}

func (w *CampaignWriter) patch(ctx context.Context, pkey string, fields []string, values []bool) patchAnswer {
	body := map[string]bool{}
	for i, f := range fields {
		body[f] = values[i]
	}
	js, err := json.Marshal(body)
	if err != nil {
		return patchAnswer{WriteResult: WriteResult{Err: err}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, w.APIURL+w.Resource+"/profile/"+url.PathEscape(pkey), bytes.NewReader(js))
	if err != nil {
		return patchAnswer{WriteResult: WriteResult{Err: err}}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := w.Client.Do(req)
	a := patchAnswer{at: time.Now(), exact: true}
	if err != nil {
		a.Err = fmt.Errorf("campaign PATCH: %w", extract.Unquery(err))
		return a
	}
	defer resp.Body.Close()
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		a.at, a.exact = d, false
	}
	if resp.StatusCode/100 != 2 {
		ae := extract.ReadCampaignError("", resp)
		a.Status, a.Code, a.Message = resp.StatusCode, ae.Code, ae.Message
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			a.retryAfter = apiclient.RetryAfter(resp)
		}
		return a
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	a.Status = resp.StatusCode
	return a
}

// unguarded sends a write that clears no opt-out: the API client retries
// it, and one whose outcome stays unknown is read back.
func (w *CampaignWriter) unguarded(ctx context.Context, cw *CampaignWrite) WriteResult {
	a := w.patch(ctx, cw.PKey, cw.Fields, cw.Values)
	switch {
	case errors.Is(a.Err, apiclient.ErrNotSent):
		return a.WriteResult
	case a.Err != nil:
		return w.readBack(ctx, cw, a.Err)
	case a.Status >= 500 && a.Status != http.StatusServiceUnavailable:
		// a 5xx after every try: the PATCH may have been applied
		return w.readBack(ctx, cw, errors.New("campaign PATCH: "+a.Error()))
	}
	return a.WriteResult
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

// guarded makes a write that clears an opt-out. Campaign has no
// conditional write, so the profile is read again right before the PATCH
// (which is sent once, never retried by the client after a wait: each try
// gets its own re-read), and read again after it, with its marketing
// history: a person who unsubscribed between the re-read and the PATCH
// shows there, and one whose profile moved after the PATCH's answer may
// have too. Either way the opt-out is set back and the write reported as
// raced, never as applied.
func (w *CampaignWriter) guarded(ctx context.Context, cw *CampaignWrite) WriteResult {
	failures := 0
	for {
		before, found, err := w.Reader.Profile(ctx, cw.PKey)
		if err != nil {
			return WriteResult{Err: fmt.Errorf("re-reading before clearing an opt-out: %w", err)}
		}
		if !found {
			return WriteResult{Status: http.StatusNotFound, Message: "the profile no longer exists"}
		}
		// An unknown lastModified (unreadable now, or forgotten in state
		// for lying in the future) cannot show the profile unchanged.
		if before.Modified == extract.NoTime || before.Modified != cw.Modified {
			return WriteResult{Err: ErrMoved}
		}
		for i, f := range cw.Fields {
			if v := w.Reader.Value(&before, f); v != cw.Was[i] {
				return WriteResult{Err: ErrMoved}
			}
		}
		if err := ctx.Err(); err != nil {
			return WriteResult{Err: fmt.Errorf("not sent: %w", err)}
		}
		a := w.patch(apiclient.SingleTry(ctx), cw.PKey, cw.Fields, cw.Values)
		if a.retryAfter > 0 {
			// Throttled: not applied. The wait is not a try; the next try
			// reads the profile again.
			if err := sleep(ctx, a.retryAfter); err != nil {
				return WriteResult{Err: fmt.Errorf("not sent: %w", err)}
			}
			continue
		}
		if a.Err == nil && a.Status/100 == 4 {
			return a.WriteResult // refused: not applied
		}
		// The PATCH went out: what follows (the check, a read-back, setting
		// the opt-out back) completes even if a signal arrives meanwhile.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		r, again := w.settle(rctx, cw, &before, a)
		cancel()
		if !again {
			return r
		}
		failures++
		if failures >= max(w.MaxTries, 1) {
			return a.WriteResult
		}
		if err := sleep(ctx, apiclient.Backoff(failures)); err != nil {
			return WriteResult{Err: fmt.Errorf("not sent: %w", err)}
		}
	}
}

// settle works out a clearing PATCH that went out: checked for a race if
// it was applied; after a 5xx or a dropped connection, read back first —
// again reports one that surely was not applied (the profile unchanged).
func (w *CampaignWriter) settle(ctx context.Context, cw *CampaignWrite, before *extract.Profile, a patchAnswer) (r WriteResult, again bool) {
	if a.OK() {
		return w.check(ctx, cw, before, a, nil), false
	}
	after, found, err := w.Reader.Profile(ctx, cw.PKey)
	if err != nil || !found {
		return w.restore(ctx, cw, nil, fmt.Sprintf("the PATCH's outcome is unknown (%s) and the profile could not be read back", a.Error())), false
	}
	if after.Modified == before.Modified {
		return a.WriteResult, true
	}
	return w.check(ctx, cw, before, a, &after), false
}

// check reads the profile and its history after a clearing PATCH was
// applied, and sets the opt-out back if a person may have unsubscribed
// meanwhile. after, when given, is a read made already.
func (w *CampaignWriter) check(ctx context.Context, cw *CampaignWrite, before *extract.Profile, a patchAnswer, after *extract.Profile) WriteResult {
	if after == nil {
		p, found, err := w.Reader.Profile(ctx, cw.PKey)
		if err != nil || !found {
			why := "the profile could not be read back after the write"
			if err != nil {
				why += ": " + err.Error()
			}
			return w.restore(ctx, cw, nil, why)
		}
		after = &p
	}
	for i, f := range cw.Fields {
		if !cw.Values[i] && w.Reader.Value(after, f) == extract.True {
			return w.restore(ctx, cw, after, fmt.Sprintf("%s was unsubscribed again in Campaign right after the write (lastModified %s)", f, extract.FormatTime(after.Modified)))
		}
	}
	// The Date header has whole seconds: only a time past its second is
	// surely later than the answer.
	past := a.at.UnixMilli()
	if !a.exact {
		past = a.at.Truncate(time.Second).Add(time.Second).UnixMilli() - 1
	}
	if after.Modified > past {
		return w.restore(ctx, cw, after, fmt.Sprintf("the profile changed in Campaign after the write was answered (lastModified %s, answered %s)",
			extract.FormatTime(after.Modified), a.at.UTC().Format(time.RFC3339Nano)))
	}
	h, err := w.Reader.UnsubscribedAfter(ctx, cw.PKey, before.Modified)
	switch {
	case err != nil:
		// Unknown is not "no": the opt-out goes back.
		return w.restore(ctx, cw, after, "the profile's history could not be read to rule out an unsubscribe during the write: "+err.Error())
	case !h.Readable:
		w.NoHistory.Store(true)
	case h.OptOut != 0:
		return w.restore(ctx, cw, after, fmt.Sprintf("the person unsubscribed at %s, while the write was in flight", extract.FormatTime(h.OptOut)))
	}
	if !a.OK() { // its answer was lost; the read back shows it applied
		return WriteResult{Status: http.StatusOK}
	}
	return a.WriteResult
}

// restore sets back to true every field the write cleared that does not
// read true now (after; nil: not known), and reports the write as raced.
func (w *CampaignWriter) restore(ctx context.Context, cw *CampaignWrite, after *extract.Profile, why string) WriteResult {
	var fields []string
	var values []bool
	for i, f := range cw.Fields {
		if !cw.Values[i] && (after == nil || w.Reader.Value(after, f) != extract.True) {
			fields, values = append(fields, f), append(values, true)
		}
	}
	if len(fields) == 0 {
		return WriteResult{Err: fmt.Errorf("%w: %s; the opt-out is in place", ErrRaced, why)}
	}
	if a := w.patch(ctx, cw.PKey, fields, values); !a.OK() {
		return WriteResult{Err: fmt.Errorf("%w: %s, and setting %s back to true failed (%s): set it back in Campaign by hand", ErrNotRestored, why, strings.Join(fields, ", "), a.Error())}
	}
	return WriteResult{Err: fmt.Errorf("%w: %s; %s set back to true", ErrRaced, why, strings.Join(fields, ", "))}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
