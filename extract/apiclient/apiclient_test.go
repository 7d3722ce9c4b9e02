package apiclient

import (
	"net/http"
	"testing"
	"time"
)

// The waits between tries grow from half a second to two minutes, each
// drawn from its upper half.
func TestBackoff(t *testing.T) {
	for _, tt := range []struct {
		n      int
		lo, hi time.Duration
	}{
		{1, 250 * time.Millisecond, 500 * time.Millisecond},
		{2, 500 * time.Millisecond, time.Second},
		{4, 2 * time.Second, 4 * time.Second},
		{9, time.Minute, 2 * time.Minute},
		{1000, time.Minute, 2 * time.Minute},
	} {
		for range 50 {
			if d := Backoff(tt.n); d < tt.lo || d > tt.hi {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tt.n, d, tt.lo, tt.hi)
			}
		}
	}
	// The client's own waits are the same (its attempts count from 0).
	for range 50 {
		if d := backoff(waitMin, waitMax, 3, &http.Response{StatusCode: 500}); d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("backoff after a 500 = %v", d)
		}
	}
	if d := backoff(waitMin, waitMax, 3, &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"7"}}}); d != 7*time.Second {
		t.Errorf("a 429's Retry-After not waited exactly: %v", d)
	}
}

// A throttled answer's wait is what it asks, never nothing: a zero wait
// would read as "not throttled".
func TestRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		header string
		lo, hi time.Duration
	}{
		{"3", 3 * time.Second, 3 * time.Second},
		{" 2 ", 2 * time.Second, 2 * time.Second},
		{"0", time.Millisecond, time.Millisecond},
		{time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat), 8 * time.Second, 10 * time.Second},
		{"Mon, 01 Jan 2001 00:00:00 GMT", time.Millisecond, time.Millisecond},
		{"", time.Second, time.Second},
		{"soon", time.Second, time.Second},
	} {
		resp := &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {tt.header}}}
		if d := RetryAfter(resp); d < tt.lo || d > tt.hi {
			t.Errorf("Retry-After %q: %v, want within [%v, %v]", tt.header, d, tt.lo, tt.hi)
		}
	}
}
