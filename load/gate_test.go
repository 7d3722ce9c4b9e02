package load

import (
	"context"
	"testing"
)

// The bound on batches in flight comes down to the server's hint and
// never goes back up.
func TestGateLimit(t *testing.T) {
	g := newGate(4)
	ctx := context.Background()
	for range 2 {
		if err := g.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	g.limit(1)
	g.limit(3)
	if g.max != 1 {
		t.Fatalf("max %d after hints 1 then 3, want 1", g.max)
	}
	acquired := make(chan struct{})
	go func() {
		_ = g.acquire(ctx)
		close(acquired)
	}()
	g.release()
	select {
	case <-acquired:
		t.Fatal("acquired with one in flight and a limit of 1")
	default:
	}
	g.release()
	<-acquired // both released: now there is room
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := g.acquire(cancelled); err == nil {
		t.Fatal("acquire on a cancelled context succeeded")
	}
}
