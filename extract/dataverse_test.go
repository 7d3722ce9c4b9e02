package extract

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestStatusText(t *testing.T) {
	for _, tt := range []struct {
		status        int
		code, message string
		want          string
	}{
		{412, "412", "Precondition Failed", "HTTP 412: Precondition Failed"},
		{412, "0x80060882", "The version of the existing record doesn't match.", "HTTP 412 0x80060882: The version of the existing record doesn't match."},
		{404, "", "", "HTTP 404"},
		{404, "404", "", "HTTP 404"},
		{500, "", "boom", "HTTP 500: boom"},
	} {
		if got := StatusText(tt.status, tt.code, tt.message); got != tt.want {
			t.Errorf("StatusText(%d, %q, %q) = %q, want %q", tt.status, tt.code, tt.message, got, tt.want)
		}
	}
}

// A space in a query is %20, never '+', which only Dataverse reads as one.
func TestQueryValue(t *testing.T) {
	for in, want := range map[string]string{
		"modifiedon gt 2026-11-20T09:50:00Z":   "modifiedon%20gt%202026-11-20T09%3A50%3A00Z",
		"2026-11-20 09:00:00.000Z":             "2026-11-20%2009%3A00%3A00.000Z",
		"a+b":                                  "a%2Bb",
		"contactid eq 0a1b2c3d-0000-0000-0000": "contactid%20eq%200a1b2c3d-0000-0000-0000",
	} {
		if got := QueryValue(in); got != want {
			t.Errorf("QueryValue(%q) = %q, want %q", in, got, want)
		}
	}
}

// A link a page carries is followed as given when absolute, else resolved
// against the URL of the page.
func TestResolve(t *testing.T) {
	page := "http://h:1/api/data/v9.2/contacts?$select=contactid&$skiptoken=5"
	for _, tt := range []struct{ link, want string }{
		{"http://other/api/data/v9.2/contacts?$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E", "http://other/api/data/v9.2/contacts?$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E"},
		{"contacts?%24select=contactid&%24skiptoken=10", "http://h:1/api/data/v9.2/contacts?%24select=contactid&%24skiptoken=10"},
		{"/api/data/v9.2/contacts?$deltatoken=9", "http://h:1/api/data/v9.2/contacts?$deltatoken=9"},
	} {
		got, err := resolve(page, tt.link)
		if err != nil || got != tt.want {
			t.Errorf("resolve(%q) = %q, %v, want %q", tt.link, got, err, tt.want)
		}
	}
	if _, err := resolve(page, "http://[::1"); err == nil {
		t.Error("a link that does not parse was taken")
	}
}

// A transport error loses the *url.Error, whose text holds the query.
func TestUnquery(t *testing.T) {
	inner := errors.New("connection reset by peer")
	err := Unquery(&url.Error{Op: "Get", URL: "http://h/contacts?$select=contactid&$skiptoken=secretish", Err: inner})
	if err != inner || strings.Contains(err.Error(), "?") {
		t.Fatalf("%v", err)
	}
	if Unquery(inner) != inner {
		t.Fatal("another error was changed")
	}
}
