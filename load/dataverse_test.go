package load

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func answer(contentType, body string) *http.Response {
	return &http.Response{Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(strings.NewReader(body))}
}

func statuses(rs []*WriteResult) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		if r != nil {
			out[i] = r.Status
		}
	}
	return out
}

// One result per change set sent, whatever the answer's format.
func TestReadBatchAnswer(t *testing.T) {
	multipart := "--b\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n" +
		"--cs\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--cs--\r\n" +
		"--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 3\r\n\r\n" +
		"HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":\"412\",\"message\":\"Precondition Failed\"}}\r\n" +
		"--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 200 OK\r\n\r\n\r\n--b--\r\n"
	for _, tt := range []struct {
		name, ct, body string
		want           []int
		wantErr        bool
	}{
		// Content-ID 3 puts the 412 third; the part without one takes the
		// first free place
		{"multipart", "multipart/mixed;boundary=b", multipart, []int{204, 200, 412}, false},
		// what came whole counts; the rest stays unknown (and is read back)
		{"multipart cut short", "multipart/mixed; boundary=b", multipart[:len(multipart)/2], []int{204, 0, 0}, false},
		{"multipart cut in a part", "multipart/mixed; boundary=b", multipart[:len(multipart)-60], []int{204, 0, 412}, true},
		{"JSON", "application/json", `{"responses":[{"id":"r2","status":412,"atomicityGroup":"g2","body":{"error":{"code":"412","message":"Precondition Failed"}}},{"id":"r1","status":200,"atomicityGroup":"g1"},{"id":"r9","status":204}]}`,
			[]int{200, 412, 0}, false},
		{"JSON change set with a failure", "application/json", `{"responses":[{"id":"a","status":204,"atomicityGroup":"g1"},{"id":"b","status":404,"atomicityGroup":"g1"}]}`, []int{404, 0, 0}, false},
		{"neither", "text/html", "<html>", nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBatchAnswer(answer(tt.ct, tt.body), []string{"g1", "g2", "g3"})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if tt.want == nil {
				return
			}
			if s := statuses(got); len(s) != len(tt.want) || s[0] != tt.want[0] || s[1] != tt.want[1] || s[2] != tt.want[2] {
				t.Fatalf("statuses %v, want %v", s, tt.want)
			}
		})
	}
	got, _ := readBatchAnswer(answer("multipart/mixed;boundary=b", multipart), []string{"g1", "g2", "g3"})
	if r := got[2]; r.OK() || r.Error() != "HTTP 412: Precondition Failed" {
		t.Fatalf("the refusal reads %q", r.Error())
	}
}

// Throttling halves the batches in flight, down to one.
func TestGateHalve(t *testing.T) {
	g := newGate(5)
	for _, want := range []int{2, 1, 1} {
		if _, to := g.halve(); to != want {
			t.Fatalf("halved to %d, want %d", to, want)
		}
	}
}

// An ETag is sent back exactly as read — unless it cannot be: one holding a
// line break would split the request; that write is not sent at all.
func TestETagThatCannotGoBackIsNotSent(t *testing.T) {
	w := &DataverseWriter{BaseURL: "http://127.0.0.1:1/", Client: &http.Client{}}
	res := w.Apply(t.Context(), []DataverseWrite{{ETag: "W/\"1\"\r\nIf-Match: *", Fields: []string{"donotemail"}, Values: []bool{true}}})
	if res[0].OK() || !strings.Contains(res[0].Error(), "not sent") {
		t.Fatalf("%+v", res[0])
	}
}
