package load

import (
	"regexp"
	"slices"
	"strings"
)

// Reasons counts the rows (or writes) of one reason and keeps the first
// few as examples. Reason is the reason's shape: quoted cell text, ids,
// PKeys and numbers replaced by "…", so that rows differing only in those
// share one reason and no cell text is kept beyond ids and PKeys.
type Reasons struct {
	Reason   string    `json:"reason"`
	Count    int       `json:"count"`
	Examples []Example `json:"examples,omitempty"`
}

// Example is one row or write: where it is and whom it concerns. Message is
// the service's answer to a failed write (as the audit file holds it).
type Example struct {
	Source  string `json:"source,omitempty"` // a reject's file; a failed write's target system
	Line    int    `json:"line,omitempty"`
	ID      string `json:"id,omitempty"` // contact id, or a PKey for a profile row
	PKey    string `json:"pkey,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message,omitempty"`
}

// Bounds of what a run keeps of its rejects and failed writes: a night
// with a million bad rows adds a few kilobytes to the history, not more.
const (
	MaxReasons   = 16
	MaxExamples  = 5
	maxMessage   = 300
	OtherReasons = "other reasons"
)

var (
	quotedText = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	guidText   = regexp.MustCompile(`\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?`)
	pkeyText   = regexp.MustCompile(`@[A-Za-z0-9_-]+`)
	numberText = regexp.MustCompile(`\b[0-9]+\b`)
)

// ReasonShape reduces a reason to what rows with the same problem share.
func ReasonShape(reason string) string {
	s := quotedText.ReplaceAllString(reason, `"…"`)
	s = guidText.ReplaceAllString(s, "…")
	s = pkeyText.ReplaceAllString(s, "…")
	return numberText.ReplaceAllString(s, "N")
}

// AddReason counts one row or write under its reason's shape and keeps it
// as an example while its reason has fewer than MaxExamples. Past
// MaxReasons distinct reasons, the rest are counted together.
func AddReason(groups []Reasons, reason string, ex Example) []Reasons {
	if len(ex.Message) > maxMessage {
		ex.Message = strings.ToValidUTF8(ex.Message[:maxMessage], "") + "…"
	}
	return MergeReasons(groups, []Reasons{{Reason: ReasonShape(reason), Count: 1, Examples: []Example{ex}}})
}

// MergeReasons adds reasons already counted (another run's, for a report
// of a period) within the same bounds.
func MergeReasons(groups, more []Reasons) []Reasons {
	for _, m := range more {
		i := slices.IndexFunc(groups, func(g Reasons) bool { return g.Reason == m.Reason })
		if i < 0 && len(groups) >= MaxReasons {
			i = slices.IndexFunc(groups, func(g Reasons) bool { return g.Reason == OtherReasons })
			if i < 0 {
				groups = append(groups, Reasons{Reason: OtherReasons})
				i = len(groups) - 1
			}
		}
		if i < 0 {
			groups = append(groups, Reasons{Reason: m.Reason})
			i = len(groups) - 1
		}
		g := &groups[i]
		g.Count += m.Count
		for _, e := range m.Examples {
			// Runs over the same file find the same rows: show each once.
			if len(g.Examples) < MaxExamples && !slices.Contains(g.Examples, e) {
				g.Examples = append(g.Examples, e)
			}
		}
	}
	return groups
}
