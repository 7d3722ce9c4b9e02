package transform

// SafetyStopError is a run stopped by a safety limit (safety.max_optin,
// safety.max_missing) before anything was written; the command exits 4.
// Err says which limits stopped it and why.
type SafetyStopError struct{ Err error }

func (e *SafetyStopError) Error() string { return e.Err.Error() }
func (e *SafetyStopError) Unwrap() error { return e.Err }
