package cli

import "fmt"

// HintError is an error that carries what the user can do next. Main prints Err as
// "fedweave: error: ..." and Hint on a second line, "fedweave: hint: ...". Find one in a chain
// with errors.As; the outermost hint wins.
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// Hint returns err wrapped with a hint: one short sentence, lower case, without a final period,
// that names a command or flag to try, e.g. `use --device cpu, the default`. Hint(nil, h) is nil.
// The result still matches err with errors.Is and errors.As.
func Hint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &HintError{Err: err, Hint: hint}
}

// UsageError marks a mistake in how fedweave was called: an unknown command or flag, a bad flag
// value, a missing or extra argument. Main exits with status 2 for it (1 for other errors) and,
// when no hint is attached, hints at the command's -h.
type UsageError struct {
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a [UsageError] whose message is formatted as by fmt.Errorf (%w works).
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}
