package extract

import "testing"

// Rejects and messages show the names users have always seen; only a file
// is shortened to its base name, and only a file counts as one.
func TestSourceNames(t *testing.T) {
	for _, tt := range []struct {
		src         Source
		name, short string
		file        bool
	}{
		{File("/drops/d365/night 1.csv"), "/drops/d365/night 1.csv", "night 1.csv", true},
		{DataverseAPI(), "dataverse", "dataverse", false},
		{CampaignAPI(), "campaign api", "campaign api", false},
		{RetryQueue(DataverseAPI()), "retry queue (dataverse)", "retry queue (dataverse)", false},
		{RetryQueue(Source{}), "retry queue", "retry queue", false},
		{Source{Kind: APISource, Name: "a/b"}, "a/b", "a/b", false},
	} {
		if tt.src.String() != tt.name || tt.src.Short() != tt.short || tt.src.IsFile() != tt.file {
			t.Errorf("%+v: %q %q %v, want %q %q %v", tt.src, tt.src.String(), tt.src.Short(), tt.src.IsFile(), tt.name, tt.short, tt.file)
		}
	}
	if File("dataverse") == DataverseAPI() || File("a").Compare(File("b")) >= 0 || DataverseAPI().Compare(File("dataverse")) == 0 {
		t.Error("sources of another kind or name compare equal")
	}
}
