package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestWalkTransactionTakesTxBatches: a walk's writer puts txBatches
// batches in each transaction, waiting for the next with the transaction
// open, however slowly the decider hands them over, and commits the rest
// with the last. Here each batch comes only once the one before is back
// with the decider, as when the writer keeps pace: committing whenever no
// batch was ready made a transaction of each batch.
func TestWalkTransactionTakesTxBatches(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const per = 5
	batches := 2*txBatches + 3
	var txs, withFinal []int // contacts the file held after each transaction
	fin := &Final{Run: &Run{ID: "r1", Started: logT0, Outcome: "ok"}}
	c := &committer{s: st, perTx: txBatches, free: make(chan *Batch, commitBatches), ready: make(chan chunk, commitBatches-1),
		o: CommitOptions{Final: fin, AfterChunk: func(int) {
			n := 0
			if err := st.view(func(tx *bolt.Tx) error {
				return st.records(tx.Bucket(bucketContacts)).ForEach(func(_, _ []byte) error { n++; return nil })
			}); err != nil {
				t.Error(err)
			}
			runs, err := st.Runs()
			if err != nil {
				t.Error(err)
			}
			txs = append(txs, n)
			if len(runs) > 0 {
				withFinal = append(withFinal, n)
			}
		}}}
	done := make(chan error, 1)
	go func() { done <- c.writeChunks(ctx) }()
	b := st.NewBatch(per)
	b.scratch = &commitScratch{}
	for k := range batches {
		b.Reset()
		for i := k * per; i < (k+1)*per; i++ {
			s := snap(i)
			b.Put(id(i), &s)
		}
		c.ready <- chunk{batch: b, n: per, last: k == batches-1}
		select {
		case b = <-c.free: // put: the writer waits for the next
		case err := <-done:
			t.Fatalf("the writer stopped after %d batches: %v", k+1, err)
		case <-time.After(time.Minute):
			t.Fatalf("batch %d not put", k)
		}
	}
	close(c.ready)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []int{txBatches * per, 2 * txBatches * per, batches * per}
	if len(txs) != len(want) || txs[0] != want[0] || txs[1] != want[1] || txs[2] != want[2] {
		t.Fatalf("the file held %v contacts after each transaction, want %v", txs, want)
	}
	if len(withFinal) != 1 || withFinal[0] != batches*per {
		t.Fatalf("the run's record came with the transactions ending at %v contacts, want the last only", withFinal)
	}
}
