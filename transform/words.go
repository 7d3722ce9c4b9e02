package transform

import (
	"strconv"
	"strings"
)

// Plural is a count with its noun: "1 contact", "2 contacts", "3 entries".
func Plural(n int, one string) string {
	if n == 1 || n == -1 {
		return strconv.Itoa(n) + " " + one
	}
	return strconv.Itoa(n) + " " + pluralForm(one)
}

func pluralForm(one string) string {
	// Only the last word takes the plural: "known opt-out" → "known opt-outs".
	head, last := "", one
	if i := strings.LastIndexByte(one, ' '); i >= 0 {
		head, last = one[:i+1], one[i+1:]
	}
	switch {
	case strings.HasSuffix(last, "y") && len(last) > 1 && !strings.ContainsRune("aeiou", rune(last[len(last)-2])):
		return head + last[:len(last)-1] + "ies"
	case strings.HasSuffix(last, "s"), strings.HasSuffix(last, "x"), strings.HasSuffix(last, "ch"), strings.HasSuffix(last, "sh"):
		return head + last + "es"
	}
	return head + last + "s"
}

// Percent is part of whole for a message: "6 %", "5.8 %", "0.04 %".
func Percent(part, whole int) string {
	if whole == 0 {
		return "- %"
	}
	p := 100 * float64(part) / float64(whole)
	switch {
	case p == float64(int(p)):
		return strconv.Itoa(int(p)) + " %"
	case p >= 1:
		return strconv.FormatFloat(p, 'f', 1, 64) + " %"
	}
	return strconv.FormatFloat(p, 'g', 2, 64) + " %"
}
