package load

// FailedWritesError is a run that finished but whose API writes were, for
// some contacts, refused or not sent: they are audited failed and queued
// for the next run, and the command exits 3. Err says how many.
type FailedWritesError struct{ Err error }

func (e *FailedWritesError) Error() string { return e.Err.Error() }
func (e *FailedWritesError) Unwrap() error { return e.Err }
