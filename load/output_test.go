package load

import (
	"errors"
	"testing"
)

// What a run whose API writes went out returns: the signal that cut the
// writes only when there were writes to cut, else the refused writes (exit
// 3), else nothing.
func TestOutputResult(t *testing.T) {
	cut := errors.New("interrupted by SIGTERM while writing")
	for _, tc := range []struct {
		name    string
		held    int
		refused int
		cut     error
		want    string
	}{
		{name: "all applied"},
		{name: "a signal, nothing held", cut: cut},
		{name: "a signal while writing", held: 2, cut: cut, want: cut.Error()},
		{name: "a signal while writing, some refused", held: 2, refused: 1, cut: cut, want: cut.Error()},
		{name: "refused", held: 3, refused: 2, want: "the writes of 2 contacts were refused or not sent; they are queued for the next run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &Output{held: make([]Held, tc.held), refused: tc.refused}
			err := o.Result(tc.cut)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("result %v, want none", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("result %v, want %q", err, tc.want)
			}
			var fw *FailedWritesError
			if errors.As(err, &fw) != (tc.cut == nil) {
				t.Errorf("result %v (%T): a FailedWritesError only without a signal", err, err)
			}
		})
	}
}
