package extract

import (
	"cmp"
	"path/filepath"
)

// SourceKind says what a run's records were read from.
type SourceKind uint8

const (
	// FileSource is an export file; the source's name is its path.
	FileSource SourceKind = iota + 1
	// APISource is a system's API.
	APISource
	// QueueSource is the retry queue: contacts whose writes were refused
	// last time, read again through the API or taken from state.
	QueueSource
)

// Source names where records come from, for rejects and messages: an
// export file, a system's API or the retry queue. A source that is no file
// never has a path, and nothing takes its name for one.
type Source struct {
	Kind SourceKind
	// Name is what rejects (their source column) and messages show: a
	// file's path, or the API's or queue's name.
	Name string
}

// String is the source's name as rejects and messages show it.
func (s Source) String() string { return s.Name }

// Short is the name a message gives the source beside others: a file's
// base name.
func (s Source) Short() string {
	if s.IsFile() {
		return filepath.Base(s.Name)
	}
	return s.Name
}

// Compare orders sources by name, as the rejects file lists them.
func (s Source) Compare(o Source) int {
	if c := cmp.Compare(s.Name, o.Name); c != 0 {
		return c
	}
	return cmp.Compare(s.Kind, o.Kind)
}

// IsFile says the source is an export file, to be opened, hashed and
// remembered as processed.
func (s Source) IsFile() bool { return s.Kind == FileSource }

// File is the source of an export file.
func File(path string) Source { return Source{Kind: FileSource, Name: path} }

// DataverseAPI is the source of contacts read through the Dataverse Web API.
func DataverseAPI() Source { return Source{Kind: APISource, Name: DataverseSource} }

// CampaignAPI is the source of profiles read through the Campaign REST API.
func CampaignAPI() Source { return Source{Kind: APISource, Name: CampaignSource} }

// RetryQueue is the source of the retry queue's contacts: read again
// through the API named by through, or, when through is the zero Source,
// taken from what state knows of them.
func RetryQueue(through Source) Source {
	if through == (Source{}) {
		return Source{Kind: QueueSource, Name: "retry queue"}
	}
	return Source{Kind: QueueSource, Name: "retry queue (" + through.Name + ")"}
}
