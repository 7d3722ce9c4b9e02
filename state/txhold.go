package state

// txHold is what bbolt keeps of the batches a transaction has put until it
// commits: it refers to the values it is handed, not copies. A record's
// values and the indexes' are copied into the scratch's arena already; a
// batch's decision-log entries and its blocks of the PKey index written
// whole are put as they lie in the batch. Those buffers move here, and the
// batch takes spare ones, so it can be filled again while the
// transaction is still open.
type txHold struct {
	held, spare [][]byte
}

// take moves what bbolt keeps of b (once put) into the hold.
func (h *txHold) take(b *Batch) {
	h.held = append(h.held, b.log.vals, b.whole)
	b.log.vals, b.whole = h.spareBuf(), h.spareBuf()
}

func (h *txHold) spareBuf() []byte {
	n := len(h.spare)
	if n == 0 {
		return nil
	}
	buf := h.spare[n-1][:0]
	h.spare[n-1] = nil
	h.spare = h.spare[:n-1]
	return buf
}

// committed says the transaction ended (committed or not): what it held
// is spare.
func (h *txHold) committed() {
	for i, buf := range h.held {
		h.spare = append(h.spare, buf[:0])
		h.held[i] = nil
	}
	h.held = h.held[:0]
}
