package show

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Build is what the Go toolchain stamped into the binary: the module
// version, and with VCS stamping (go build in a git checkout) the
// revision, its commit time and whether the tree had uncommitted changes.
// Go records no build time, so that builds are reproducible; the commit
// time is the nearest it has. go run and go test stamp no VCS information.
type Build struct {
	Version    string // the module version, "(devel)" when unknown
	Revision   string
	CommitTime string
	Modified   bool
	GoVersion  string
}

// ReadBuild reads what the toolchain stamped into this binary.
func ReadBuild() Build {
	b := Build{Version: "(devel)"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := bi.Main.Version; v != "" {
		b.Version = v
	}
	b.GoVersion = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.CommitTime = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// Short is the version as one word, kept with every run: the module
// version, and the revision when the version does not carry it already.
func (b Build) Short() string {
	v := b.Version
	if b.Revision != "" && !strings.Contains(v, shortRev(b.Revision)) {
		v += "+" + shortRev(b.Revision)
		if b.Modified {
			v += "-dirty"
		}
	}
	return v
}

func shortRev(r string) string { return r[:min(12, len(r))] }

// Line is what --version prints.
func (b Build) Line() string {
	if b.Revision == "" {
		return b.Version + " (no VCS revision: built by go run or go test, or with -buildvcs=false)"
	}
	s := fmt.Sprintf("%s revision %s", b.Version, b.Revision)
	if b.Modified {
		s += " (with uncommitted changes)"
	}
	return s + ", committed " + b.CommitTime
}

// Write is what the version command prints.
func (b Build) Write(w io.Writer) {
	fmt.Fprintf(w, "optsync %s\n", b.Version)
	if b.Revision == "" {
		fmt.Fprintln(w, "revision:    unknown (built by go run or go test, or with -buildvcs=false: no VCS information stamped)")
	} else {
		fmt.Fprintf(w, "revision:    %s\n", b.Revision)
		fmt.Fprintf(w, "commit time: %s (Go records no build time; this is the time of the commit built)\n", b.CommitTime)
		fmt.Fprintf(w, "modified:    %v\n", b.Modified)
	}
	fmt.Fprintf(w, "go:          %s\n", b.GoVersion)
}
