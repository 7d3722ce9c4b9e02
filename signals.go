package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// signalError is a run stopped by SIGINT or SIGTERM; it exits 128+signal.
// kept says the run had applied some API writes, which it committed. A run
// that reaches max_run_time (after, set) stops the same way, as on SIGTERM.
type signalError struct {
	sig   syscall.Signal
	kept  bool
	after time.Duration
}

func (e *signalError) Error() string {
	by := "interrupted by " + e.sig.String()
	if e.after > 0 {
		by = fmt.Sprintf("stopped after max_run_time %s, as on SIGTERM", e.after)
	}
	if e.kept {
		return by + " while writing: what was applied is kept, the writes not sent are queued for the next run"
	}
	return by + ": nothing of this run was kept; the next run does its work"
}

// withSignals cancels the context on SIGINT or SIGTERM, with the signal as
// the cause, so that the run stops reading and deciding and exits 130/143.
func withSignals(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(&signalError{sig: s.(syscall.Signal)})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// interrupted turns a cancellation by a signal into the signal's error.
func interrupted(ctx context.Context, err error) error {
	var se *signalError
	if errors.As(context.Cause(ctx), &se) && ctx.Err() != nil {
		return se
	}
	return err
}
