package load

import (
	"io"
	"path/filepath"

	"optsync/load/report"
)

// WriteReport renders a report into path, as every output file is
// written.
func WriteReport(path string, r *report.Report) error {
	return WriteFile(path, FileOptions{}, func(w io.Writer) error { return report.Render(w, r) })
}

// WriteOutReport renders a report into outDir as name, creating or
// tightening the folder as a run does; it returns the file's path.
func WriteOutReport(outDir, name string, r *report.Report) (string, error) {
	d, err := OutDir(outDir)
	if err != nil {
		return filepath.Join(outDir, name), err
	}
	defer d.Close()
	return d.Path(name), d.WriteFile(name, FileOptions{}, func(w io.Writer) error { return report.Render(w, r) })
}
