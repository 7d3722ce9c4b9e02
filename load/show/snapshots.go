package show

import (
	"encoding/csv"
	"io"
)

// Snapshot is one row of state export: a contact and one mapped pair,
// every value already in the text the CSV holds.
type Snapshot struct {
	ContactID, ProfilePKey, D365Field, CampaignField    string
	AgreedOptedOut, AgreedSince, D365Value, CampaignVal string
	D365Pending, CampaignPending                        string
	D365Modified, CampaignModified, LastDecided         string
	CampaignFieldModified, CampaignConflict             string
}

// SnapshotCSV writes state export's CSV a row at a time: the snapshots of
// a large state are never held at once.
type SnapshotCSV struct{ w *csv.Writer }

// NewSnapshotCSV writes the header.
func NewSnapshotCSV(out io.Writer) (*SnapshotCSV, error) {
	w := csv.NewWriter(out)
	err := w.Write([]string{"contact_id", "profile_pkey", "d365_field", "campaign_field", "agreed_opted_out", "agreed_since",
		"d365_value", "campaign_value", "d365_written_pending", "campaign_written_pending", "d365_modified", "campaign_modified", "last_decided",
		"campaign_field_modified", "campaign_conflict"})
	return &SnapshotCSV{w: w}, err
}

// Write adds one row.
func (s *SnapshotCSV) Write(r *Snapshot) error {
	return s.w.Write([]string{r.ContactID, r.ProfilePKey, r.D365Field, r.CampaignField, r.AgreedOptedOut, r.AgreedSince,
		r.D365Value, r.CampaignVal, r.D365Pending, r.CampaignPending, r.D365Modified, r.CampaignModified, r.LastDecided,
		r.CampaignFieldModified, r.CampaignConflict})
}

// Flush writes what is buffered and says whether any write failed.
func (s *SnapshotCSV) Flush() error {
	s.w.Flush()
	return s.w.Error()
}
