package load

import (
	"fmt"
	"regexp"
)

// partialName is the temporary name of a run's file: its final name (audit,
// rejects, update file, report, a rejects spill of the run), a random part
// and .partial (see Dir.createTemp).
var partialName = regexp.MustCompile(`^(?:audit|rejects|d365-updates|campaign-updates|report)-(\d{8}T\d{6}Z-[0-9a-f]+)(?:\.csv|\.html|\.spill-\d+)\.[0-9a-f]{8}\.partial$`)

// RemovePartials removes from out_dir the temporary files of the given
// runs — runs recorded as interrupted, whose process was killed before it
// could remove them — and returns the names removed. Only names of that
// exact shape are touched; a link is removed, never followed.
func RemovePartials(outDir string, runIDs []string) ([]string, error) {
	if len(runIDs) == 0 {
		return nil, nil
	}
	ids := map[string]bool{}
	for _, id := range runIDs {
		ids[id] = true
	}
	d, err := OutDir(outDir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("out_dir %s: %w", d.path, err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("out_dir %s: %w", d.path, err)
	}
	var removed []string
	for _, e := range entries {
		m := partialName.FindStringSubmatch(e.Name())
		if m == nil || !ids[m[1]] || e.IsDir() {
			continue
		}
		if err := d.root.Remove(e.Name()); err != nil {
			return removed, fmt.Errorf("removing %s: %w", d.Path(e.Name()), err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}
