package load

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"optsync/extract"
	"optsync/fixtures/campaignsim"
	"optsync/fixtures/simcore"
)

// hookTransport lets a test act around each request: before it is sent
// (returning a response answers it without sending) and after.
type hookTransport struct {
	base   http.RoundTripper
	before func(r *http.Request) *http.Response
	after  func(r *http.Request, resp *http.Response) *http.Response
}

func (h hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.before != nil {
		if resp := h.before(r); resp != nil {
			return resp, nil
		}
	}
	resp, err := h.base.RoundTrip(r)
	if err == nil && h.after != nil {
		resp = h.after(r, resp)
	}
	return resp, err
}

func fake(status int, hdr http.Header, body string) *http.Response {
	if hdr == nil {
		hdr = http.Header{}
	}
	return &http.Response{StatusCode: status, Header: hdr, Body: io.NopCloser(strings.NewReader(body))}
}

type guardEnv struct {
	sim    *campaignsim.Server
	clock  *simcore.Clock // the simulator's, moved by the tests
	w      *CampaignWriter
	before func(r *http.Request) *http.Response
	after  func(r *http.Request, resp *http.Response) *http.Response
}

const guardPKey = "@race1"

// newGuardEnv serves one profile opted out of email, last modified at
// 09:00; the simulator's clock stands at 12:00 and moves 10 ms a request.
func newGuardEnv(t *testing.T) *guardEnv {
	t.Helper()
	at := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	e := &guardEnv{clock: simcore.NewClock(at.Add(3 * time.Hour))}
	e.sim = campaignsim.NewServer(campaignsim.Options{Organization: "o", ClientID: "c", ClientSecret: "s", Now: e.clock.Now, Seed: 1})
	authed, api := campaignAPI(t, e.sim)
	yes := true
	e.sim.Seed([]campaignsim.Profile{{PKey: guardPKey, ExternalID: "00000000-0000-0000-0000-000000000001", LastModified: at,
		Fields: map[string]*bool{"blackListEmail": &yes}}})
	client := &http.Client{Transport: hookTransport{
		base: authed.Transport,
		before: func(r *http.Request) *http.Response {
			e.clock.Add(10 * time.Millisecond)
			if e.before != nil {
				return e.before(r)
			}
			return nil
		},
		after: func(r *http.Request, resp *http.Response) *http.Response {
			if e.after != nil {
				return e.after(r, resp)
			}
			return resp
		},
	}}
	reader := &extract.Campaign{Client: client, APIURL: api, Resource: "profileAndServices", Fields: []string{"blackListEmail"}}
	e.w = &CampaignWriter{Client: client, Reader: reader, APIURL: api, Resource: "profileAndServices", Concurrency: 1, MaxTries: 3}
	return e
}

func (e *guardEnv) clear() WriteResult {
	at := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	return e.w.Apply(context.Background(), []CampaignWrite{{PKey: guardPKey, Fields: []string{"blackListEmail"}, Values: []bool{false},
		ClearsOptOut: true, Modified: at.UnixMilli(), Was: []extract.Tri{extract.True}}})[0]
}

func (e *guardEnv) value() bool {
	p, _ := e.sim.Profile(guardPKey)
	return *p.Fields["blackListEmail"]
}

// calls lists the requests the simulator served, as "GET profile",
// "PATCH {body}", "GET history".
func (e *guardEnv) calls() []string {
	var out []string
	for _, r := range e.sim.Requests() {
		switch {
		case r.Path == e.sim.IMSPath():
		case r.Method == "PATCH":
			out = append(out, "PATCH "+r.Body)
		case strings.Contains(r.Path, "/history/"):
			out = append(out, "GET history")
		default:
			out = append(out, "GET profile")
		}
	}
	return out
}

func isPatch(r *http.Request) bool { return r.Method == http.MethodPatch }

func TestCampaignClearingGuard(t *testing.T) {
	const clearing, restoring = `PATCH {"blackListEmail":false}`, `PATCH {"blackListEmail":true}`
	patched := 0
	tests := []struct {
		name   string
		before func(e *guardEnv, r *http.Request) *http.Response
		after  func(e *guardEnv, r *http.Request, resp *http.Response) *http.Response
		raced  bool // reported as unsubscribe-race-restored
		failed bool // reported as failed
		value  bool // blackListEmail afterwards
		calls  []string
		why    string
	}{
		{name: "nobody raced", value: false,
			calls: []string{"GET profile", clearing, "GET profile", "GET history"}},
		{name: "unsubscribed between the re-read and the PATCH: only the history shows it", raced: true, value: true,
			before: func(e *guardEnv, r *http.Request) *http.Response {
				if isPatch(r) && patched == 0 {
					patched++
					e.sim.Unsubscribe(guardPKey, "blackListEmail")
				}
				return nil
			},
			calls: []string{"GET profile", clearing, "GET profile", "GET history", restoring}, why: "unsubscribed at"},
		{name: "unsubscribed right after the PATCH", raced: true, value: true,
			after: func(e *guardEnv, r *http.Request, resp *http.Response) *http.Response {
				if isPatch(r) {
					e.sim.Unsubscribe(guardPKey, "blackListEmail")
				}
				return resp
			},
			calls: []string{"GET profile", clearing, "GET profile"}, why: "unsubscribed again in Campaign right after the write"},
		{name: "profile edited after the PATCH's answer, no history of it", raced: true, value: true,
			after: func(e *guardEnv, r *http.Request, resp *http.Response) *http.Response {
				if isPatch(r) {
					e.clock.Add(2 * time.Second) // past the Date header's second
					no := false
					e.sim.SetField(guardPKey, "blackListMobile", &no)
				}
				return resp
			},
			calls: []string{"GET profile", clearing, "GET profile", restoring}, why: "changed in Campaign after the write was answered"},
		{name: "edited within the PATCH's second: not surely after it", value: false,
			after: func(e *guardEnv, r *http.Request, resp *http.Response) *http.Response {
				if isPatch(r) {
					no := false
					e.sim.SetField(guardPKey, "blackListMobile", &no)
				}
				return resp
			},
			calls: []string{"GET profile", clearing, "GET profile", "GET history"}},
		{name: "throttled PATCH: waited, not counted, re-read before the next", value: false,
			before: func(e *guardEnv, r *http.Request) *http.Response {
				if isPatch(r) && patched < 4 { // more than MaxTries
					patched++
					return fake(429, http.Header{"Retry-After": {"0"}}, `{"error_code":"429050","message":"Too many requests"}`)
				}
				return nil
			},
			calls: []string{"GET profile", "GET profile", "GET profile", "GET profile", "GET profile", clearing, "GET profile", "GET history"}},
		{name: "answer lost, PATCH not applied: read back, tried again", value: false,
			before: func(e *guardEnv, r *http.Request) *http.Response {
				if isPatch(r) && patched == 0 {
					patched++
					return fake(502, nil, `{"error_code":"502000","message":"Bad Gateway"}`)
				}
				return nil
			},
			calls: []string{"GET profile", "GET profile", "GET profile", clearing, "GET profile", "GET history"}},
		{name: "answer lost, PATCH applied: read back, not sent again", value: false,
			after: func(e *guardEnv, r *http.Request, resp *http.Response) *http.Response {
				if isPatch(r) {
					resp.Body.Close()
					return fake(504, nil, `{"error_code":"504000","message":"Gateway Timeout"}`)
				}
				return resp
			},
			calls: []string{"GET profile", clearing, "GET profile", "GET history"}},
		{name: "history unreadable: unknown is not no", raced: true, value: true,
			before: func(e *guardEnv, r *http.Request) *http.Response {
				if strings.Contains(r.URL.Path, "/history/") {
					return fake(500, nil, `{"code":500,"message":"RST-360011"}`)
				}
				return nil
			},
			calls: []string{"GET profile", clearing, "GET profile", restoring}, why: "history could not be read"},
		{name: "no history resource: lastModified alone", value: false,
			before: func(e *guardEnv, r *http.Request) *http.Response {
				if strings.Contains(r.URL.Path, "/history/") {
					return fake(404, nil, `{"code":404,"message":"Unsupported endpoint."}`)
				}
				return nil
			},
			calls: []string{"GET profile", clearing, "GET profile"}},
		{name: "setting back fails: failed, says so", failed: true, value: false,
			before: func(e *guardEnv, r *http.Request) *http.Response {
				if isPatch(r) && patched == 0 {
					patched++
					e.sim.Unsubscribe(guardPKey, "blackListEmail")
				} else if isPatch(r) {
					return fake(400, nil, `{"code":400,"message":"refused"}`)
				}
				return nil
			},
			calls: []string{"GET profile", clearing, "GET profile", "GET history"}, why: "set it back in Campaign by hand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patched = 0
			e := newGuardEnv(t)
			if tt.before != nil {
				e.before = func(r *http.Request) *http.Response { return tt.before(e, r) }
			}
			if tt.after != nil {
				e.after = func(r *http.Request, resp *http.Response) *http.Response { return tt.after(e, r, resp) }
			}
			r := e.clear()
			switch {
			case tt.raced:
				if !errors.Is(r.Err, ErrRaced) || !strings.Contains(r.Error(), tt.why) {
					t.Errorf("want a raced result saying %q, got ok=%v %v", tt.why, r.OK(), r.Error())
				}
			case tt.failed:
				if r.OK() || errors.Is(r.Err, ErrRaced) || !errors.Is(r.Err, ErrNotRestored) || !strings.Contains(r.Error(), tt.why) {
					t.Errorf("want a failure saying %q, got ok=%v %v", tt.why, r.OK(), r.Error())
				}
			default:
				if !r.OK() {
					t.Errorf("want applied, got %v", r.Error())
				}
			}
			if v := e.value(); v != tt.value {
				t.Errorf("blackListEmail %v, want %v", v, tt.value)
			}
			if got := e.calls(); strings.Join(got, "\n") != strings.Join(tt.calls, "\n") {
				t.Errorf("requests:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.calls, "\n  "))
			}
			if e.w.NoHistory.Load() != strings.HasPrefix(tt.name, "no history") {
				t.Errorf("NoHistory %v", e.w.NoHistory.Load())
			}
		})
	}
}
