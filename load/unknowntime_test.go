package load

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"optsync/extract"
)

type currentReader map[extract.ID]extract.Current

func (r currentReader) Current(_ context.Context, ids []extract.ID) (map[extract.ID]extract.Current, error) {
	out := map[extract.ID]extract.Current{}
	for _, id := range ids {
		if c, ok := r[id]; ok {
			out[id] = c
		}
	}
	return out, nil
}

// A write decided without an ETag goes only to a contact shown unchanged
// since the decision, and an unknown change time shows nothing: a decision
// based on a contact whose time state forgot (it lay in the future), against
// a contact whose modifiedon now cannot be read, is not sent, although the
// values match.
func TestDataverseUnknownTimeIsNotUnmoved(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "nothing is to be sent", http.StatusTeapot)
	}))
	defer srv.Close()
	id, _ := extract.ParseID("00000000-0000-4000-8000-000000000001")
	for _, tt := range []struct {
		name           string
		basis, current int64
	}{
		{"both unknown", extract.NoTime, extract.NoTime},
		{"basis unknown", extract.NoTime, 1_780_000_000_000},
		{"current unknown", 1_780_000_000_000, extract.NoTime},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := &DataverseWriter{Client: srv.Client(), BaseURL: srv.URL + "/", Log: zerolog.Nop(),
				Reader: currentReader{id: {Modified: tt.current, ETag: `W/"5"`, Values: map[string]extract.Tri{"donotemail": extract.True}}}}
			res := w.Apply(t.Context(), []DataverseWrite{{ID: id, Fields: []string{"donotemail"}, Values: []bool{false},
				Modified: tt.basis, Was: []extract.Tri{extract.True}}})
			if !errors.Is(res[0].Err, ErrContactMoved) {
				t.Fatalf("%+v, want %v", res[0], ErrContactMoved)
			}
			if n := requests.Load(); n != 0 {
				t.Fatalf("%d requests sent", n)
			}
		})
	}
}

// Clearing an opt-out in Campaign needs the profile shown unchanged since it
// was read; an unknown lastModified (unreadable now, and forgotten in state)
// shows nothing, so the opt-out is not cleared.
func TestCampaignClearingNeedsAKnownTime(t *testing.T) {
	var patches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			patches.Add(1)
			w.WriteHeader(http.StatusOK)
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/profile/@p1") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"PKey":"@p1","externalId":"00000000-0000-4000-8000-000000000001","lastModified":"not a time","blackListEmail":true}`))
	}))
	defer srv.Close()
	reader := &extract.Campaign{Client: srv.Client(), APIURL: srv.URL + "/", Resource: "profileAndServices", Fields: []string{"blackListEmail"}}
	w := &CampaignWriter{Client: srv.Client(), Reader: reader, APIURL: srv.URL + "/", Resource: "profileAndServices", Concurrency: 1}
	res := w.Apply(t.Context(), []CampaignWrite{{PKey: "@p1", Fields: []string{"blackListEmail"}, Values: []bool{false},
		ClearsOptOut: true, Modified: extract.NoTime, Was: []extract.Tri{extract.True}}})
	if !errors.Is(res[0].Err, ErrMoved) {
		t.Fatalf("%+v, want %v", res[0], ErrMoved)
	}
	if n := patches.Load(); n != 0 {
		t.Fatalf("%d PATCHes sent: an opt-out was cleared on an unknown time", n)
	}
}
