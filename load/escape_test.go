package load

import "testing"

func TestEscapeCell(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"=1+2", "'=1+2"},
		{"+SUM(A1)", "'+SUM(A1)"},
		{"-5", "'-5"},
		{"@cmd", "'@cmd"},
		{"\tx", "'\tx"},
		{"\rx", "'\rx"},
		{"plain", "plain"},
		{"a=b", "a=b"},
		{" =x", " =x"},
		{"'=x", "'=x"},
		{"0a1b2c3d-0000-0000-0000-000000000001", "0a1b2c3d-0000-0000-0000-000000000001"},
	}
	for _, tt := range tests {
		if got := escapeCell(tt.in); got != tt.want {
			t.Errorf("escapeCell(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEscapeID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"@Abc_12-x", "@Abc_12-x"},
		{"@1", "@1"},
		{"@", "'@"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"@a b", "'@a b"},
		{"=x", "'=x"},
		{"+x", "'+x"},
		{"-x", "'-x"},
		{"\t@a", "'\t@a"},
		{"\r@a", "'\r@a"},
		{"", ""},
		{"0a1b2c3d-0000-0000-0000-000000000001", "0a1b2c3d-0000-0000-0000-000000000001"},
		{"{0A1B2C3D-0000-0000-0000-000000000001}", "{0A1B2C3D-0000-0000-0000-000000000001}"},
	}
	for _, tt := range tests {
		if got := escapeID(tt.in, true); got != tt.want {
			t.Errorf("escapeID(%q, checked) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Raw text from a bad cell is escaped even when it looks like a PKey.
	for _, in := range []string{"@SUM", "@Abc_12-x"} {
		if got := escapeID(in, false); got != "'"+in {
			t.Errorf("escapeID(%q, unchecked) = %q", in, got)
		}
	}
}
