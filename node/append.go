package node

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// The append path: which of a request's entries are new (idempotence,
// producer.go), then, under the stream's appendMu, the conditional
// append's check, the time stamp and the reservation of positions, so
// that the position checked is the position taken, times increase with
// positions, and a batch's entries take consecutive positions. appendMu
// is taken after the producer's lock and held only while positions are
// reserved (the payload copies of a mover complete after it is released).

// errCondition is the class of conditional appends refused because the
// stream's next position was not the one expected (conditionError).
var errCondition = errors.New("node: expected next position is not the stream's next")

// conditionError is a conditional append's refusal: FailedPrecondition
// with api.AppendConditionFailed in its details.
type conditionError struct {
	stream           string
	expected, actual uint64
}

func (e *conditionError) Error() string {
	return fmt.Sprintf("stream %s: expected next position %d, but the stream's next position is %d", e.stream, e.expected, e.actual)
}

func (e *conditionError) Is(target error) bool { return target == errCondition }

func (e *conditionError) GRPCStatus() *status.Status {
	st := status.New(codes.FailedPrecondition, e.Error())
	if d, err := st.WithDetails(&api.AppendConditionFailed{ExpectedNext: e.expected, ActualNext: e.actual}); err == nil {
		return d
	}
	return st
}

// appendNoSync stores req's entries (its data, or each entry of its
// batch), except those repeating a stored sequence number of their
// producer, and returns the answer and the highest position in it; the
// caller makes that durable (waitDurable) before answering, duplicates
// included. The entries stored are stored atomically (a batch record:
// batchenv.go) at consecutive positions, under the producer's lock; if
// req.ExpectedNext is set, only if the first of them would be stored
// there (a request of duplicates only is answered without the check). On
// an error nothing of the request is visible to readers. req must have
// passed checkAppend.
func (st *stream) appendNoSync(req *api.AppendRequest) (resp *api.AppendResponse, top uint64, err error) {
	var p *producer
	key := producerKey(req.ProducerId)
	if req.ProducerId != "" {
		p = st.prod.lock(key)
		defer st.prod.unlock(p)
	}
	if len(req.Batch) == 0 {
		if p != nil {
			pos, dup, err := p.lookup(req.Sequence)
			if err != nil {
				return nil, 0, err
			}
			if dup {
				return &api.AppendResponse{Position: pos, Duplicate: true}, pos, nil
			}
		}
		one := [1][]byte{req.Data}
		pos, _, err := st.store(req.ExpectedNext, false, p != nil, key, req.Sequence, one[:], nil)
		if err != nil {
			return nil, 0, err
		}
		if p != nil {
			p.record(req.Sequence, pos, st.prod.window)
		}
		return &api.AppendResponse{Position: pos}, pos, nil
	}
	n := len(req.Batch)
	resp = &api.AppendResponse{Positions: make([]uint64, n), Duplicates: make([]bool, n)}
	var fresh []int // the entries to store, by index in the batch
	for j := range req.Batch {
		if p != nil {
			pos, dup, err := p.lookup(req.Sequence + uint64(j))
			if err != nil {
				return nil, 0, err
			}
			if dup {
				resp.Positions[j], resp.Duplicates[j] = pos, true
				top = max(top, pos)
				continue
			}
		}
		fresh = append(fresh, j)
	}
	if len(fresh) > 0 {
		entries := req.Batch
		if len(fresh) < n {
			entries = make([][]byte, len(fresh))
			for k, j := range fresh {
				entries[k] = req.Batch[j]
			}
		} else {
			fresh = nil // all of them: seqs follow req.Sequence
		}
		first, stored, err := st.store(req.ExpectedNext, req.Coalesced, p != nil, key, req.Sequence, entries, fresh)
		if err != nil {
			// The runs of a coalesced batch stored before the error
			// are remembered: their retry is answered, not stored
			// again.
			for k := range stored {
				j := k
				if fresh != nil {
					j = fresh[k]
				}
				if p != nil {
					p.record(req.Sequence+uint64(j), first+uint64(k), st.prod.window)
				}
			}
			return nil, 0, err
		}
		for k := range entries {
			j := k
			if fresh != nil {
				j = fresh[k]
			}
			resp.Positions[j] = first + uint64(k)
			if p != nil {
				p.record(req.Sequence+uint64(j), first+uint64(k), st.prod.window)
			}
		}
		top = max(top, first+uint64(len(entries))-1)
	}
	resp.Position, resp.Duplicate = resp.Positions[n-1], resp.Duplicates[n-1]
	return resp, top, nil
}

// store appends entries (at least one) at consecutive positions and
// returns the first: as one entry with its time, or as a batch (slots
// and a record) stored atomically; a coalesced batch as runs that each
// fit a record. Entry k has sequence number seq0+k, or seq0+idx[k] when
// idx is not nil. With expected set, it stores nothing unless the first
// position is *expected. A stream without envelopes (made before them)
// stores bare entries, without times, one by one. On an error, stored
// says how many of the entries, from the first, were stored (runs of a
// coalesced batch, entries of a stream without envelopes).
//
// Under appendMu only positions are reserved (and times stamped): the
// entries are written into their reservations and published after it is
// released, so appenders copy in parallel, and a record is written
// straight into the mapping.
func (st *stream) store(expected *uint64, coalesced, hasProducer bool, key, seq0 uint64, entries [][]byte, idx []int) (first uint64, stored int, err error) {
	if st.leader != nil {
		if err := st.leader.Err(); err != nil {
			return 0, 0, err
		}
	}
	seq := func(k int) uint64 {
		if idx != nil {
			return seq0 + uint64(idx[k])
		}
		return seq0 + uint64(k)
	}
	if !st.meta.Envelope {
		return st.storeBare(expected, entries)
	}
	runs, err := st.batchRuns(entries, coalesced, hasProducer)
	if err != nil {
		return 0, 0, err
	}
	var fills []*local.Reservation // one per run, for the synchronous path
	var t int64
	err = func() error {
		st.appendMu.Lock()
		defer st.appendMu.Unlock()
		if expected != nil {
			if next := st.ls.Next(); next != *expected {
				return &conditionError{stream: st.name, expected: *expected, actual: next}
			}
		}
		t = st.stamp()
		for k, r := range runs {
			var at uint64
			var err error
			switch {
			case st.app != nil:
				// The mover copies from a buffer of ours.
				at, err = st.startRun(r, entries, t, hasProducer, key, seq)
			default:
				var v *local.Reservation
				if at, v, err = st.reserveRun(r); v != nil {
					fills = append(fills, v)
				}
			}
			if err != nil {
				return err
			}
			if k == 0 {
				first = at
			} else if at != first+uint64(r.lo) {
				// appendMu orders every append of the node to the stream.
				return fmt.Errorf("node: stream %s: entries at %d, not %d after the request's first", st.name, at, first+uint64(r.lo))
			}
			stored = r.hi
		}
		return nil
	}()
	// Every reservation taken is filled and published, even after an
	// error: until it is, no later entry can commit.
	for k, v := range fills {
		r := runs[k]
		if r.hi-r.lo == 1 {
			putTimed(v.Bytes(), entries[r.lo], t, hasProducer, key, seq(r.lo))
		} else {
			putBatchRecord(v.Bytes(), entries[r.lo:r.hi], t, hasProducer, key, r.lo, seq)
		}
		if _, perr := v.Publish(); perr != nil && err == nil {
			err, stored = perr, r.lo
		}
	}
	if err != nil {
		return first, stored, err
	}
	return first, len(entries), nil
}

// storeBare stores entries one by one, bare (a stream made before
// envelopes): no times, no atomic batches.
func (st *stream) storeBare(expected *uint64, entries [][]byte) (first uint64, stored int, err error) {
	st.appendMu.Lock()
	defer st.appendMu.Unlock()
	if expected != nil {
		if next := st.ls.Next(); next != *expected {
			return 0, 0, &conditionError{stream: st.name, expected: *expected, actual: next}
		}
	}
	for k, e := range entries {
		pos, err := st.start(e)
		if err != nil {
			return first, k, err
		}
		if k == 0 {
			first = pos
		}
	}
	return first, len(entries), nil
}

// batchRun is entries [lo, hi) of a request, stored as one entry (one
// entry in the run) or as slots and one batch record of size bytes.
type batchRun struct {
	lo, hi int
	size   int // the stored entry's bytes, envelope included
}

// batchRuns splits entries into what is stored as one: all of them
// (one entry, or one record: ErrTooLarge if it does not fit in a region),
// or for a coalesced batch runs that each fit.
func (st *stream) batchRuns(entries [][]byte, coalesced, hasProducer bool) ([]batchRun, error) {
	if len(entries) == 1 {
		return []batchRun{{0, 1, timedSize(len(entries[0]), hasProducer)}}, nil
	}
	maxRec := maxBatchRecord(st.ls.RegionSize())
	var runs []batchRun
	if !coalesced {
		runs = []batchRun{{0, len(entries), batchRecordSize(entries, hasProducer)}}
	} else {
		lo, size := 0, batchRecHeader
		for k, e := range entries {
			add := batchEntrySize(len(e), hasProducer)
			if k > lo && size+add > maxRec {
				runs = append(runs, batchRun{lo: lo, hi: k, size: size})
				lo, size = k, batchRecHeader
			}
			size += add
		}
		runs = append(runs, batchRun{lo: lo, hi: len(entries), size: size})
	}
	for i, r := range runs {
		if r.hi-r.lo == 1 {
			runs[i].size = timedSize(len(entries[r.lo]), hasProducer)
		} else if r.size > maxRec {
			return nil, fmt.Errorf("%w: a batch is stored as one record, here of %d bytes, more than the %d a region of %d bytes holds (%w)",
				local.ErrTooLarge, r.size, maxRec, st.ls.RegionSize(), errBatchTooLarge)
		}
	}
	return runs, nil
}

// reserveRun takes the positions of run r (its slots stored, the
// reservation of its entry or record returned for the caller to fill and
// publish, also with an error) and returns the first. Called with
// appendMu held.
func (st *stream) reserveRun(r batchRun) (uint64, *local.Reservation, error) {
	first, err := st.storeSlots(r.hi - r.lo - 1)
	if err != nil {
		return 0, nil, err
	}
	v, err := st.ls.Reserve(r.size)
	if err != nil {
		return 0, nil, err
	}
	if r.hi-r.lo == 1 {
		first = v.Index
	} else if want := first + uint64(r.hi-r.lo-1); v.Index != want {
		// appendMu orders every append of the node to the stream, so
		// this is a bug; the record is still written (a reservation
		// must be published).
		return first, v, fmt.Errorf("node: stream %s: batch record at %d, not %d after its slots", st.name, v.Index, want)
	}
	return first, v, nil
}

// startRun stores run r through the stream's mover (Appender) and
// returns its first position. Called with appendMu held.
func (st *stream) startRun(r batchRun, entries [][]byte, t int64, hasProducer bool, key uint64, seq func(int) uint64) (uint64, error) {
	if r.hi-r.lo == 1 {
		// The header alone is built here; the payload is copied once,
		// into the mapping beside it (startEntry).
		var hdr [timedProdHdr]byte
		h := hdr[:timedSize(0, hasProducer)]
		putTimed(h, nil, t, hasProducer, key, seq(r.lo))
		return st.startEntry(h, entries[r.lo])
	}
	b := make([]byte, r.size)
	putBatchRecord(b, entries[r.lo:r.hi], t, hasProducer, key, r.lo, seq)
	first, err := st.storeSlots(r.hi - r.lo - 1)
	if err != nil {
		return 0, err
	}
	last, err := st.start(b)
	if err != nil {
		return 0, err
	}
	if want := first + uint64(r.hi-r.lo-1); last != want {
		return 0, fmt.Errorf("node: stream %s: batch record at %d, not %d after its slots", st.name, last, want)
	}
	return first, nil
}

// storeSlots stores n batch slots and returns the first's position (0 if
// n is 0: the caller takes the record's). Slots stored before an error are positions
// readers skip.
func (st *stream) storeSlots(n int) (uint64, error) {
	if n == 0 {
		return 0, nil
	}
	var first uint64
	for k := 0; k < n; k++ {
		pos, err := st.ls.AppendNoSync(batchSlot)
		if err != nil {
			return 0, err
		}
		if k == 0 {
			first = pos
		}
	}
	return first, nil
}

// stamp is the time of an entry appended now: the clock's, or 1 ns after
// the last time stamped if the clock is not ahead of it (it stepped
// back, or ticks coarsely), so that times increase with positions, also
// across restarts and leaders (latestTime). Called with appendMu held.
func (st *stream) stamp() int64 {
	t := st.clock().UnixNano()
	if t <= st.lastTime {
		t = st.lastTime + 1
	}
	st.lastTime = t
	return t
}

// latestTime is the time of the stream's last entry that carries one (0
// if none does), read when the stream is opened.
func (st *stream) latestTime() (int64, error) {
	regions := st.ls.Regions()
	end, head := st.ls.Committed(), st.ls.Head()
	for k := len(regions) - 1; k >= 0 && end > head; k-- {
		from := max(regions[k].First, head)
		var last int64
		found := false
		_, err := st.ls.Walk(from, end, func(_ uint64, b []byte) bool {
			if t, ok := storedTime(b); ok {
				last, found = t, true
			}
			return true
		})
		if err != nil {
			return 0, fmt.Errorf("node: stream %s: %w", st.name, err)
		}
		if found {
			return last, nil
		}
		end = min(end, from)
	}
	return 0, nil
}
